"""Logs for operators: every failure is ONE JSON line (severity, message, ids, exception type,
a stack trace Error Reporting can group), never a plain-text traceback from Flask, werkzeug or
gunicorn; each processed message is one INFO line with its counts and the delay since publish.

The functions are driven through functions-framework's test client in a child process, so
that everything written to its stderr (Flask's own logger included) is what is checked."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from meterline.core.clock import now_us
from meterline.core.events import validate_event
from meterline.core.messages import encode_message
from meterline.local.worker import drain_once
from tests.support import REPO_ROOT, embedded_runtime, written

# The child: poison messages, a failing warehouse, a good message, the framework's own 4xx, an
# unexpected error in ingest; it prints the statuses on stdout, and logs whatever it logs.
_CHILD = r"""
import base64, json, sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import functions_framework
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from meterline.config import Settings
from meterline.core.clock import now_us
from meterline.core.events import validate_event
from meterline.core.messages import encode_message
from meterline.runtime import build_runtime, set_runtime
from meterline.services.auth import create_api_key

repo, data_dir = sys.argv[1], Path(sys.argv[2])
runtime = build_runtime(Settings(backend="embedded", data_dir=data_dir))
set_runtime(runtime)
key = create_api_key(runtime.adapters.api_keys, "t", now_us())

def envelope(data, message_id, published):
    stamp = published.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return to_structured(CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "id": message_id,
         "source": "//pubsub.googleapis.com/projects/test/topics/events"},
        {"message": {"data": base64.b64encode(data).decode(), "messageId": message_id, "publishTime": stamp}},
    ))

statuses = {}
process = functions_framework.create_app("process", f"{repo}/functions/process/main.py", "cloudevent").test_client()
now = datetime.now(timezone.utc)
for attempt in range(3):
    headers, body = envelope(b"\x00garbage", "m-poison", now)
    statuses[f"poison-{attempt}"] = process.post("/", headers=headers, data=body).status_code

event = validate_event({"transaction_id": "t1", "external_subscription_id": "s1", "code": "c",
                        "timestamp": 1767225600, "properties": {"value": 1}}, now_us())
good = encode_message([event])
service = runtime.process.service
def warehouse_down(data):
    raise ConnectionError("warehouse unreachable")
service.handle_message = warehouse_down
headers, body = envelope(good, "m-down", now)
statuses["down"] = process.post("/", headers=headers, data=body).status_code
del service.handle_message

headers, body = envelope(good, "m-good", now - timedelta(seconds=3))
statuses["good"] = process.post("/", headers=headers, data=body).status_code
statuses["get"] = process.get("/").status_code
statuses["not a cloudevent"] = process.post("/", data=b"nope", headers={"Content-Type": "application/json"}).status_code

ingest = functions_framework.create_app("ingest", f"{repo}/functions/ingest/main.py").test_client()
def broken(body):
    raise RuntimeError("a bug")
runtime.ingest.service.create = broken
answer = ingest.post("/api/v1/events", data=b"{}", headers={"Authorization": f"Bearer {key}"})
statuses["ingest bug"] = answer.status_code
statuses["ingest bug body"] = answer.get_json()
statuses["ingest trace"] = ingest.open("/api/v1/events", method="TRACE").status_code
print(json.dumps(statuses))
"""


@pytest.fixture(scope="module")
def child(tmp_path_factory) -> tuple[dict, list[str]]:
    data_dir = tmp_path_factory.mktemp("data")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(REPO_ROOT), str(data_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout), done.stderr.splitlines()


def test_every_stderr_line_is_one_json_object(child):
    _, lines = child
    assert lines
    for line in lines:
        assert line.startswith("{"), f"plain text on stderr: {line!r}"
        entry = orjson.loads(line)
        assert entry["severity"] and entry["message"]
    assert not any("ERROR in app" in line or "Traceback" in line.split('"stack_trace"')[0] for line in lines)


def test_a_poison_message_logs_one_line_per_attempt_with_a_groupable_trace(child):
    statuses, lines = child
    assert [statuses[f"poison-{i}"] for i in range(3)] == [500, 500, 500]  # retried by Pub/Sub
    poison = [orjson.loads(x) for x in lines if '"m-poison"' in x]
    assert len(poison) == 3
    for entry in poison:
        assert entry["severity"] == "ERROR" and entry["message"].startswith("poison message")
        assert entry["exception_type"] == "PoisonMessage" and entry["message_id"] == "m-poison"
        # Python's own traceback format, which Error Reporting parses from `stack_trace`.
        assert entry["stack_trace"].startswith("Traceback (most recent call last):\n")
        assert entry["stack_trace"].rstrip().endswith("PoisonMessage: undecodable message: JSONDecodeError")
        assert "garbage" not in orjson.dumps(entry).decode()  # never the payload


def test_a_failing_dependency_logs_one_line_and_is_retried(child):
    statuses, lines = child
    assert statuses["down"] == 500
    (entry,) = [orjson.loads(x) for x in lines if '"m-down"' in x]
    assert entry["severity"] == "ERROR" and entry["exception_type"] == "ConnectionError"
    assert "Pub/Sub will deliver it again" in entry["message"] and "stack_trace" in entry


def test_a_processed_message_logs_one_info_line_with_counts_and_delay(child):
    statuses, lines = child
    assert statuses["good"] == 200
    (entry,) = [orjson.loads(x) for x in lines if '"m-good"' in x]
    assert entry["severity"] == "INFO" and entry["message"] == "message processed"
    assert (entry["inserted"], entry["duplicates"], entry["rejected"]) == (1, 0, 0)
    assert 3000 <= entry["delay_ms"] < 60_000 and entry["duration_ms"] >= 0
    assert "properties" not in entry and "t1" not in orjson.dumps(entry).decode()


def test_the_frameworks_own_4xx_are_json_and_not_logged(child):
    statuses, lines = child
    assert (statuses["get"], statuses["not a cloudevent"], statuses["ingest trace"]) == (405, 400, 401)
    assert not [x for x in lines if '"severity":"WARNING"' in x or "Bad Request" in x]


def test_an_unexpected_error_in_ingest_is_one_line_and_a_json_500(child):
    statuses, lines = child
    assert statuses["ingest bug"] == 500
    assert statuses["ingest bug body"] == {"status": 500, "error": "Internal Server Error", "code": "internal_error"}
    (entry,) = [orjson.loads(x) for x in lines if '"RuntimeError"' in x]
    assert entry["severity"] == "ERROR" and entry["message"] == "unhandled error"
    assert (entry["path"], entry["method"]) == ("/api/v1/events", "POST")
    assert entry["stack_trace"].rstrip().endswith("RuntimeError: a bug")


def test_exactly_these_lines(child):
    _, lines = child
    # 3 poison attempts, 1 failing dependency, 1 processed message, 1 ingest bug: nothing else.
    assert len(lines) == 6, lines


# ---------------------------------------------------------------------------
# In process: the embedded worker
# ---------------------------------------------------------------------------


def test_the_embedded_worker_logs_one_line_per_message_and_per_failed_attempt(tmp_path):
    runtime = embedded_runtime(tmp_path, max_delivery_attempts=2)
    event = validate_event({"transaction_id": "t1", "external_subscription_id": "s1", "code": "c",
                            "timestamp": 1767225600, "properties": {"value": 1}}, now_us())
    runtime.queue.publish(encode_message([event]), {})
    runtime.queue.publish(b"\x00garbage", {})
    with written() as lines:
        first = drain_once(runtime.queue, runtime.process.service)
        time.sleep(0.3)  # the queue backs a failed message off for 0.2 s
        second = drain_once(runtime.queue, runtime.process.service)
    assert (first.messages, first.failed, second.failed, second.dead_lettered) == (2, 1, 1, 1)
    processed, failed, dead = lines
    assert (processed["severity"], processed["message"], processed["logger"]) == ("INFO", "message processed", "meterline.worker")
    assert (processed["inserted"], processed["duplicates"], processed["rejected"]) == (1, 0, 0)
    assert {"message_id", "delay_ms", "duration_ms"} <= set(processed)
    assert (failed["severity"], failed["exception_type"], failed["attempts"]) == ("ERROR", "PoisonMessage", 1)
    assert failed["message"] == "message failed; it will be delivered again"
    assert (dead["message"], dead["attempts"]) == ("message dead-lettered after its last attempt", 2)
    assert all(line["stack_trace"].startswith("Traceback (most recent call last):") for line in (failed, dead))
