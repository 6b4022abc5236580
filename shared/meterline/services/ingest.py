"""The ingest service: validate a request's events, publish them as ONE message, answer.

It answers 200 only after the bus confirms the publish, so an accepted event is never lost;
if the publish fails it raises Unavailable (503) and the client retries, which the dedup step absorbs.
"""

from __future__ import annotations

from collections.abc import Sequence

from meterline import logs
from meterline.core.clock import now_us
from meterline.core.errors import Unavailable
from meterline.core.events import Event, NumericFieldLookup, parse_batch_body, parse_single_body
from meterline.core.messages import encode_message
from meterline.ports import EventBus, PublishFailed

_log = logs.get("ingest")


class IngestService:
    def __init__(self, bus: EventBus, numeric_field: NumericFieldLookup | None = None):
        self._bus = bus
        self._numeric_field = numeric_field

    def create(self, body: bytes) -> Event:
        """`POST /api/v1/events`: the event published. Raises a DomainError: ValidationFailed,
        MalformedInput, Unavailable."""
        event = parse_single_body(body, now_us(), self._numeric_field)
        self._publish([event])
        return event

    def create_batch(self, body: bytes) -> list[Event]:
        """`POST /api/v1/events/batch`: all events are validated before any is published."""
        events = parse_batch_body(body, now_us(), self._numeric_field)
        self._publish(events)
        return events

    def _publish(self, events: Sequence[Event]) -> None:
        try:
            self._bus.publish(encode_message(events), {"count": str(len(events))})
        except PublishFailed as exc:
            logs.failure(_log, "publish failed; answered 503, the client retries", exc, events=len(events))
            raise Unavailable() from exc
