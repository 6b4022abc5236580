"""The Pub/Sub-triggered entry point: a CloudEvent in, the process service called, ack or retry.

Following the Cloud Functions idiom, returning acknowledges the message and raising gets it
delivered again. A message that can never be processed is raised too: the subscription's
dead-letter policy (terraform/pubsub.tf) moves it aside after a bounded number of attempts,
so it never blocks the subscription. Duplicates are acknowledged (they return normally).
"""

from __future__ import annotations

import base64
from typing import Any

from meterline import logs
from meterline.services.process import PoisonMessage, ProcessResult
from meterline.runtime import Runtime, get_runtime

_log = logs.get("process")


def message_data(cloud_event_data: Any) -> bytes:
    try:
        return base64.b64decode(cloud_event_data["message"]["data"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonMessage(f"not a Pub/Sub message envelope: {type(exc).__name__}") from None


def handle_cloud_event(cloud_event: Any, runtime: Runtime | None = None) -> ProcessResult:
    data = cloud_event.data
    message_id = (data.get("message") or {}).get("messageId") if isinstance(data, dict) else None
    try:
        return (runtime or get_runtime()).process.handle_message(message_data(data))
    except PoisonMessage as exc:
        logs.event(_log, "poison message; it will be dead-lettered after its retries", 50, message_id=message_id, reason=str(exc))
        raise
