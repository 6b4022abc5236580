"""Cloud Function `bill` (HTTP; Cloud Scheduler calls it with OIDC): the billing run. Logic: meterline.services.billing."""

import functions_framework

from meterline.entrypoints.bill import bill_handler
from meterline.entrypoints.http import error_response, guarded
from meterline.runtime import bill_runtime

# What fails outside a handler (a runtime that cannot be built: a bad setting) and the
# framework's own errors, in Lago's JSON shape; and Flask never prints a plain-text traceback
# (`error_response` logs one JSON line). A 5xx makes Cloud Scheduler retry the run.
functions_framework.errorhandler(Exception)(error_response)


@functions_framework.http
def bill(request):
    return guarded(bill_handler, request, bill_runtime())
