"""Cloud Function `admin` (HTTP): Lago's catalog API (metrics, plans, customers, subscriptions). Logic: meterline.services.admin."""

import functions_framework

from meterline.entrypoints.admin import admin_handler
from meterline.entrypoints.http import error_response, guarded
from meterline.runtime import admin_runtime

# A runtime that cannot be built (a bad setting) and the framework's own errors (a path its
# router refuses, /favicon.ico) in Lago's JSON shape; and Flask never prints a plain-text
# traceback (`error_response` logs one JSON line).
functions_framework.errorhandler(Exception)(error_response)


@functions_framework.http
def admin(request):
    return guarded(admin_handler, request, admin_runtime())
