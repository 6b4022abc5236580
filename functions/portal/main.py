"""Cloud Function `portal` (HTTP): current usage and signed portal links (API key), and the customer's usage page.

Logic: meterline.services.portal."""

import functions_framework

from meterline.entrypoints.http import error_response, guarded
from meterline.entrypoints.portal import portal_handler
from meterline.runtime import portal_runtime

# A runtime that cannot be built (a bad setting) and the framework's own errors (a path its
# router refuses, /favicon.ico) in Lago's JSON shape; and Flask never prints a plain-text
# traceback (`error_response` logs one JSON line).
functions_framework.errorhandler(Exception)(error_response)


@functions_framework.http
def portal(request):
    return guarded(portal_handler, request, portal_runtime())
