"""Cloud Function `ingest` (HTTP): Lago's event API in front of Pub/Sub. Logic: meterline.services.ingest."""

import functions_framework

from meterline.entrypoints.events import events_handler
from meterline.entrypoints.http import guarded
from meterline.runtime import ingest_runtime


@functions_framework.http
def ingest(request):
    return guarded(events_handler, request, ingest_runtime())
