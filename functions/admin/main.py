"""Cloud Function `admin` (HTTP): Lago's catalog API (metrics, plans, customers, subscriptions). Logic: meterline.services.admin."""

import functions_framework

from meterline.entrypoints.admin import admin_handler
from meterline.entrypoints.http import guarded
from meterline.runtime import admin_runtime


@functions_framework.http
def admin(request):
    return guarded(admin_handler, request, admin_runtime())
