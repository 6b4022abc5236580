"""Cloud Function `ingest` (HTTP): Lago's event API in front of Pub/Sub. Logic: meterline.http."""

import functions_framework

from meterline.http import events_handler, guarded


@functions_framework.http
def ingest(request):
    return guarded(events_handler, request)
