"""Cloud Function `ingest` (HTTP): Lago's event API in front of Pub/Sub. Logic: meterline.entrypoints.http."""

import functions_framework

from meterline.entrypoints.http import events_handler, guarded


@functions_framework.http
def ingest(request):
    return guarded(events_handler, request)
