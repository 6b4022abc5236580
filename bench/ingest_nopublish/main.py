"""Diagnostic for `make bench`: the real ingest function with its publish stubbed out.

Everything else is the production path (functions-framework, Flask, API-key check against the
Firestore emulator, validation, the Lago answer), so the three servers of the bench split a
request's cost: no-op = the server's own, this one minus no-op = ingest's Python, and the real
ingest minus this one = the confirmed Pub/Sub publish. Never deploy it.
"""

import functions_framework

from meterline.config import get_settings
from meterline.entrypoints.events import events_handler
from meterline.entrypoints.http import guarded
from meterline.runtime import IngestRuntime, adapters_for
from meterline.services.ingest import IngestService


class _StubBus:
    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        return "stub"


class _NoPublishRuntime(IngestRuntime):
    """The ingest runtime with the bus replaced; everything else as deployed."""

    @property
    def service(self) -> IngestService:  # type: ignore[override]
        service = self.__dict__.get("_stub_service")
        if service is None:
            service = self.__dict__["_stub_service"] = IngestService(_StubBus(), self.numeric_fields)
        return service


_RUNTIME = _NoPublishRuntime(adapters_for(get_settings()))


@functions_framework.http
def ingest(request):
    return guarded(events_handler, request, _RUNTIME)
