"""The process function gives up on a message older than the maximum age: it moves it to
the dead letters (nothing is lost), acknowledges it, and logs one structured line."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import functions_framework
import orjson
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from meterline import logs
from meterline.config import Settings
from meterline.core.clock import now_us
from meterline.core.events import validate_event
from meterline.core.messages import encode_message
from meterline.runtime import build_runtime, set_runtime
from tests.support import REPO_ROOT


def _envelope(data: bytes, message_id: str, published: datetime):
    stamp = published.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event = CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished",
         "source": "//pubsub.googleapis.com/projects/test/topics/events", "id": message_id, "time": stamp},
        {"message": {"data": base64.b64encode(data).decode(), "messageId": message_id, "publishTime": stamp,
                     "attributes": {}},
         "subscription": "projects/test/subscriptions/process"},
    )
    return to_structured(event)


class _Lines(logging.Handler):
    """The JSON lines the process logger writes, as Cloud Logging would receive them."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(self.format(record)))


def test_a_message_older_than_the_maximum_age_is_dead_lettered_and_acknowledged(tmp_path):
    captured = _Lines()
    logs.get("process").addHandler(captured)
    runtime = build_runtime(Settings(backend="embedded", data_dir=tmp_path, max_message_age_seconds=3600))
    set_runtime(runtime)
    try:
        client = functions_framework.create_app("process", str(REPO_ROOT / "functions/process/main.py"), "cloudevent").test_client()
        event = validate_event({"transaction_id": "old-1", "external_subscription_id": "sub-old", "code": "tokens",
                                "timestamp": 1767225600, "properties": {"value": 5}}, now_us())
        data = encode_message([event])
        now = datetime.now(UTC)

        headers, body = _envelope(data, "m-old", now - timedelta(hours=2))
        response = client.post("/", headers=headers, data=body)
        assert response.status_code == 200  # acknowledged: Pub/Sub stops retrying it
        assert runtime.adapters.warehouse.get_event("sub-old", "old-1") is None  # not processed...
        (dead,) = runtime.queue.dead_letters()
        assert "max_age_exceeded" in dead[1]  # ...but kept, with the reason, for a replay
        (line,) = [entry for entry in captured.lines if entry.get("message_id") == "m-old"]
        assert line["severity"] == "WARNING" and line["age_seconds"] >= 7200 and "event" not in line

        # A message within the age is processed as usual.
        headers, body = _envelope(data, "m-new", now - timedelta(minutes=5))
        assert client.post("/", headers=headers, data=body).status_code == 200
        assert runtime.adapters.warehouse.get_event("sub-old", "old-1") == event
        assert len(runtime.queue.dead_letters()) == 1
    finally:
        set_runtime(None)
        logs.get("process").removeHandler(captured)
