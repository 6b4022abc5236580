"""Cloud Function `bill` (HTTP; Cloud Scheduler calls it with OIDC): the billing run. Logic: meterline.services.billing."""

import functions_framework

from meterline.entrypoints.bill import bill_handler
from meterline.entrypoints.http import guarded
from meterline.runtime import bill_runtime


@functions_framework.http
def bill(request):
    return guarded(bill_handler, request, bill_runtime())
