"""The Pub/Sub-triggered entry point: a CloudEvent in, the process service called, ack or retry.

Following the Cloud Functions idiom, returning acknowledges the message and raising gets it
delivered again. A message that can never be processed is raised too: the subscription's
dead-letter policy (terraform/pubsub.tf) moves it aside after a bounded number of attempts,
so it never blocks the subscription. Duplicates are acknowledged (they return normally).

A message older than `max_message_age_seconds` is not tried again (the samples' idiom for
retried functions): it is copied to the dead-letter topic, where `meterline dead-letters`
can replay it, and acknowledged. So a message that keeps failing stops costing retries
even where no dead-letter policy is set, and is still never lost.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from meterline import logs
from meterline.core.clock import now_us, to_us
from meterline.runtime import ProcessRuntime
from meterline.services.process import PoisonMessage, ProcessResult

_log = logs.get("process")


def message_data(cloud_event_data: Any) -> bytes:
    try:
        return base64.b64decode(cloud_event_data["message"]["data"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonMessage(f"not a Pub/Sub message envelope: {type(exc).__name__}") from None


def _published_us(message: dict[str, Any], cloud_event: Any) -> int | None:
    for raw in (message.get("publishTime"), _attribute(cloud_event, "time")):
        if isinstance(raw, str):
            try:
                return to_us(raw)
            except ValueError:
                continue
    return None


def _attribute(cloud_event: Any, name: str) -> Any:
    try:
        return cloud_event[name]
    except (KeyError, TypeError):
        return None


def log_processed(logger: logging.Logger, result: ProcessResult, message_id: Any, published_us: int | None,
                  started_us: int) -> None:
    """The one INFO line per processed message, for its entry point (the Pub/Sub function, the
    embedded worker): counts, the delay since publish and the time it took; no payload."""
    done = now_us()
    logs.event(
        logger, "message processed", logging.INFO, message_id=message_id,
        inserted=result.inserted, duplicates=result.duplicates, rejected=result.rejected,
        delay_ms=None if published_us is None else (done - published_us) // 1000,
        duration_ms=(done - started_us) // 1000,
    )


def handle_cloud_event(cloud_event: Any, runtime: ProcessRuntime) -> ProcessResult | None:
    """Process one message; None when it was too old and went to the dead letters instead.

    Logs one line per message: INFO with the counts and the delay since publish, or, when it
    raises, ERROR with the exception type and stack trace (`logs.failure`; the function's
    error handler then answers 500 without a second line, and Pub/Sub delivers it again).
    """
    data = cloud_event.data
    message = (data.get("message") or {}) if isinstance(data, dict) else {}
    message_id = message.get("messageId")
    published = _published_us(message, cloud_event)
    started = now_us()
    try:
        if published is not None:
            age_s = (started - published) / 1_000_000
            if age_s > runtime.settings.max_message_age_seconds:
                runtime.adapters.dead_letters.publish(
                    message_data(data), {"reason": "max_age_exceeded", "message_id": str(message_id)}
                )
                logs.event(
                    _log, "message older than the maximum age: dead-lettered and acknowledged", logging.WARNING,
                    message_id=message_id, age_seconds=round(age_s), max_age_seconds=runtime.settings.max_message_age_seconds,
                )
                return None
        result = runtime.service.handle_message(message_data(data))
    except Exception as exc:
        what = ("poison message; it will be dead-lettered after its retries" if isinstance(exc, PoisonMessage)
                else "message failed; Pub/Sub will deliver it again")
        logs.failure(_log, what, exc, message_id=message_id)
        raise
    log_processed(_log, result, message_id, published, started)
    return result
