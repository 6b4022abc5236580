"""Cloud Function `ingest` (HTTP): Lago's event API in front of Pub/Sub. Logic: meterline.services.ingest."""

import functions_framework

from meterline.entrypoints.events import events_handler
from meterline.entrypoints.http import error_response, guarded
from meterline.runtime import ingest_runtime

# A runtime that cannot be built (a bad setting) and the framework's own errors (a path its
# router refuses, /favicon.ico) in Lago's JSON shape; and Flask never prints a plain-text
# traceback (`error_response` logs one JSON line).
functions_framework.errorhandler(Exception)(error_response)


@functions_framework.http
def ingest(request):
    return guarded(events_handler, request, ingest_runtime())
