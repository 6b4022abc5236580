"""The ingest service: validate a request's events, publish them as ONE message, answer.

It answers 200 only after the bus confirms the publish, so an accepted event is never lost;
if the publish fails it answers 503 and the client retries, which the dedup step absorbs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from meterline import logs
from meterline.core.errors import ServiceUnavailable
from meterline.core.events import Event, NumericFieldLookup, parse_batch_body, parse_single_body
from meterline.ports import EventBus, PublishFailed

MESSAGE_VERSION = 1
_log = logs.get("ingest")


def now_us() -> int:
    return time.time_ns() // 1000


def encode_message(events: Sequence[Event]) -> bytes:
    """One Pub/Sub message carries all of a request's events (at most 100, far under 10 MB)."""
    return orjson.dumps({"v": MESSAGE_VERSION, "events": [e.to_message() for e in events]})


def decode_message(data: bytes) -> list[Event]:
    """The inverse of `encode_message`. Raises ValueError/KeyError/TypeError on a bad message."""
    body = orjson.loads(data)
    if not isinstance(body, dict) or body.get("v") != MESSAGE_VERSION or not isinstance(body.get("events"), list):
        raise ValueError("not a meterline events message")
    return [Event.from_message(m) for m in body["events"]]


class IngestService:
    def __init__(self, bus: EventBus, numeric_field: NumericFieldLookup | None = None):
        self._bus = bus
        self._numeric_field = numeric_field

    def create(self, body: bytes) -> dict[str, Any]:
        """`POST /api/v1/events`. Raises ClientError (4xx) or ServiceUnavailable (503)."""
        event = parse_single_body(body, now_us(), self._numeric_field)
        self._publish([event])
        return {"event": event.to_lago()}

    def create_batch(self, body: bytes) -> dict[str, Any]:
        """`POST /api/v1/events/batch`: all events are validated before any is published."""
        events = parse_batch_body(body, now_us(), self._numeric_field)
        self._publish(events)
        return {"events": [e.to_lago() for e in events]}

    def _publish(self, events: Sequence[Event]) -> None:
        try:
            self._bus.publish(encode_message(events), {"count": str(len(events))})
        except PublishFailed as exc:
            logs.event(_log, "publish failed", 40, events=len(events), error=type(exc.__cause__ or exc).__name__)
            raise ServiceUnavailable() from exc
