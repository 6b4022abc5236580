"""Diagnostic for `make bench`: the real ingest function with its publish stubbed out.

Everything else is the production path (functions-framework, Flask, API-key check against the
Firestore emulator, validation, the Lago answer), so the three servers of the bench split a
request's cost: no-op = the server's own, this one minus no-op = ingest's Python, and the real
ingest minus this one = the confirmed Pub/Sub publish. Never deploy it.
"""

import functions_framework

from meterline import runtime as wiring
from meterline.entrypoints.http import events_handler, guarded


class _StubBus:
    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        return "stub"


def _runtime() -> wiring.Runtime:
    runtime = wiring.get_runtime()
    if not isinstance(runtime.bus, _StubBus):
        # Each thread swaps the bus before its first use of runtime.ingest, which captures it.
        runtime.bus = _StubBus()
    return runtime


@functions_framework.http
def ingest(request):
    return guarded(events_handler, request, _runtime())
