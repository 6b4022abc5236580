"""The bus message: what ingest publishes and process consumes (one format, one module).

One message carries all of a request's events (at most 100, far under Pub/Sub's 10 MB), so a
request is published, and later counted, all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from meterline.core.events import Event

MESSAGE_VERSION = 1


class UndecodableMessage(ValueError):
    """Not a Meterline events message; retrying it can never help (it is dead-lettered)."""


def encode_message(events: Sequence[Event]) -> bytes:
    return orjson.dumps({"v": MESSAGE_VERSION, "events": [e.to_message() for e in events]})


def decode_message(data: bytes) -> list[Event]:
    """The inverse of `encode_message`."""
    try:
        body = orjson.loads(data)
        if not isinstance(body, dict) or body.get("v") != MESSAGE_VERSION or not isinstance(body.get("events"), list):
            raise ValueError("not a meterline events message")
        return [Event.from_message(m) for m in body["events"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UndecodableMessage(type(exc).__name__) from None
