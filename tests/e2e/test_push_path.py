"""End to end through the real push path, as it runs in Google Cloud.

    client --HTTP--> ingest (functions-framework) --publish--> Pub/Sub emulator
           --push--> process (functions-framework, CloudEvent) --> Firestore emulator (dedup)
                                                               --> bqemulator (events)

Both functions run as real `functions-framework` servers (gunicorn) in subprocesses, with
METERLINE_BACKEND=gcp and a fresh project and dataset, so nothing here calls the services
in-process: what is checked is what a client of the deployed system would see.

NOTE: bqemulator keeps a namespace per project (measured: tables created under any project id
can be written and queried), so the runtime's GOOGLE_CLOUD_PROJECT is used for BigQuery too and
no separate BigQuery project setting is needed here.

The last test drives `process` through functions-framework's test client with a real
CloudEvent against the embedded runtime (no server), for the ack/retry mapping.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from infra.servers import LocalServer, start_function
from meterline.core.clock import iso_ms
from tests.support import REPO_ROOT, env, poll

HOST = "127.0.0.1"
TOPIC = "events"
SUBSCRIPTION = "process"
DEAD_LETTER_TOPIC = "events-dead-letter"
DEAD_LETTER_PULL = "events-dead-letter-pull"
MAX_DELIVERY_ATTEMPTS = 5
BASE_TS = 1_767_225_600  # 2026-01-01T00:00:00Z


# ---------------------------------------------------------------------------
# Plumbing: functions-framework servers and a loopback-only HTTP client
# ---------------------------------------------------------------------------


class Client:
    """A tiny keep-alive HTTP client for one loopback server."""

    def __init__(self, port: int, api_key: str | None = None):
        self._port = port
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        for attempt in range(2):  # one reconnect if the server closed an idle keep-alive connection
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self._port, timeout=30)
            try:
                self._conn.request(method, path, body=body, headers=self._headers)
                response = self._conn.getresponse()
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post(self, path: str, payload: Any) -> tuple[bytes, int, Any]:
        """POST a JSON body; returns the exact bytes sent (to retry them verbatim), status and body."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, answer = self.request("POST", path, body)
        return body, status, answer

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


# ---------------------------------------------------------------------------
# The stack: emulators (session fixtures), two functions, topic, push subscription
# ---------------------------------------------------------------------------


@dataclass
class Stack:
    project: str
    dataset: str
    ingest: LocalServer
    process: LocalServer
    api_key: str
    warehouse: Any  # BigQueryWarehouse on the same project and dataset as the functions
    publisher: Any
    subscriber: Any
    topic_path: str
    dead_letter_pull_path: str

    def client(self) -> Client:
        return Client(self.ingest.port, self.api_key)

    def counted(self, subscriptions: list[str]) -> dict[str, dict[str, str]]:
        """subscription -> {transaction_id: properties JSON text}, from events_deduped.

        The stored text itself, which no port read returns: asked of the adapter in its own SQL.
        """
        rows = self.warehouse._query(
            "SELECT external_subscription_id, transaction_id, properties FROM events_deduped "
            "WHERE external_subscription_id IN UNNEST(@subs)",
            {"subs": subscriptions},
        )
        out: dict[str, dict[str, str]] = {s: {} for s in subscriptions}
        for row in rows:
            txn = row["transaction_id"]
            assert txn not in out[row["external_subscription_id"]], f"events_deduped repeats {txn}"
            out[row["external_subscription_id"]][txn] = row["properties"]
        return out

    def rejected(self, subscriptions: list[str]) -> list[dict[str, Any]]:
        return self.warehouse._query(
            "SELECT external_subscription_id, transaction_id, properties, reason FROM rejected_events_deduped "
            "WHERE external_subscription_id IN UNNEST(@subs) ORDER BY transaction_id",
            {"subs": subscriptions},
        )


@pytest.fixture(scope="module")
def stack(pubsub_emulator, firestore_emulator, bigquery_emulator) -> Iterator[Stack]:
    from google.cloud import pubsub_v1

    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
    from meterline.adapters.gcp.clients import bigquery_client, firestore_client
    from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore
    from meterline.config import Settings
    from meterline.core.clock import now_us
    from meterline.services.auth import create_api_key

    project = f"e2e-{uuid.uuid4().hex[:8]}"
    dataset = f"e2e_{uuid.uuid4().hex[:8]}"
    emulators = {**pubsub_emulator.env, **firestore_emulator.env, **bigquery_emulator.env}
    function_env = {
        **emulators,
        "METERLINE_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": project,
        "METERLINE_EVENTS_TOPIC": TOPIC,
        "METERLINE_BIGQUERY_DATASET": dataset,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    servers: list[LocalServer] = []
    with env(**emulators):
        settings = Settings(backend="gcp", google_cloud_project=project, bigquery_dataset=dataset)
        warehouse = BigQueryWarehouse(bigquery_client(settings), project, dataset)
        warehouse.ensure_schema()
        api_key = create_api_key(FirestoreApiKeyStore(firestore_client(settings)), "e2e", now_us())

        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topic_path = publisher.topic_path(project, TOPIC)
        dead_letter_path = publisher.topic_path(project, DEAD_LETTER_TOPIC)
        dead_letter_pull_path = subscriber.subscription_path(project, DEAD_LETTER_PULL)
        publisher.create_topic(name=topic_path)
        publisher.create_topic(name=dead_letter_path)
        # The dead-letter topic needs a subscription before anything lands there, or it is dropped.
        subscriber.create_subscription(name=dead_letter_pull_path, topic=dead_letter_path)
        try:
            servers.append(start_function("functions/ingest/main.py", "ingest", function_env))
            servers.append(start_function("functions/process/main.py", "process", function_env, signature_type="cloudevent"))
            ingest, process = servers
            subscriber.create_subscription(request={
                "name": subscriber.subscription_path(project, SUBSCRIPTION),
                "topic": topic_path,
                # Pushed to /projects/P/topics/T so that the CloudEvent carries its source.
                "push_config": {"push_endpoint": f"http://{HOST}:{process.port}/projects/{project}/topics/{TOPIC}"},
                "ack_deadline_seconds": 60,
                "dead_letter_policy": {"dead_letter_topic": dead_letter_path,
                                       "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS},
                # Short backoff so the poison message reaches the dead-letter topic within seconds.
                "retry_policy": {"minimum_backoff": {"seconds": 1}, "maximum_backoff": {"seconds": 2}},
            })
            yield Stack(project, dataset, ingest, process, api_key, warehouse, publisher, subscriber,
                        topic_path, dead_letter_pull_path)
        finally:
            for server in reversed(servers):
                server.stop()
            with contextlib.suppress(Exception):
                subscriber.close()


# ---------------------------------------------------------------------------
# Tests through the running servers
# ---------------------------------------------------------------------------


def _event(txn: str, sub: str, value: Any, ts: Any = None, **extra: Any) -> dict[str, Any]:
    event = {"transaction_id": txn, "external_subscription_id": sub, "code": "tokens_consumed",
             "properties": {"tokens": value, "model": "gpt-4o"}, **extra}
    if ts is not None:
        event["timestamp"] = ts
    return event


def _sums(counted: dict[str, dict[str, str]]) -> dict[str, Decimal]:
    """Exact per-subscription sums from the stored JSON text (Decimal, never float)."""
    return {
        sub: sum((Decimal(str(json.loads(p, parse_float=Decimal)["tokens"])) for p in rows.values()), Decimal(0))
        for sub, rows in counted.items()
    }


def test_events_are_counted_exactly_once_through_the_push_path(stack: Stack):
    run = uuid.uuid4().hex[:6]
    sub_a, sub_b = f"sub-a-{run}", f"sub-b-{run}"
    subs = [sub_a, sub_b]
    client = stack.client()
    truth: dict[str, dict[str, Decimal]] = {sub_a: {}, sub_b: {}}
    answers: dict[str, list[dict[str, Any]]] = {}  # transaction_id -> what ingest answered, per attempt
    retries: list[tuple[str, bytes]] = []

    def expect(event: dict[str, Any]) -> None:
        truth[event["external_subscription_id"]][event["transaction_id"]] = Decimal(str(event["properties"]["tokens"]))

    try:
        # Singles: a JSON number with a fraction (must stay exact), a numeric string with six
        # decimals, an integer, a millisecond timestamp, and no timestamp at all.
        singles = [
            _event(f"single-1-{run}", sub_a, 0.125, BASE_TS + 1, precise_total_amount_cents="12.345"),
            _event(f"single-2-{run}", sub_a, "1.000001", f"{BASE_TS + 2}.123"),
            _event(f"single-3-{run}", sub_b, 7, BASE_TS + 3),
            _event(f"single-4-{run}", sub_b, "2.5"),
        ]
        for event in singles:
            body, status, answer = client.post("/api/v1/events", {"event": event})
            assert status == 200, answer
            assert answer["event"]["transaction_id"] == event["transaction_id"]
            answers[event["transaction_id"]] = [answer["event"]]
            expect(event)
            retries.append(("/api/v1/events", body))

        # Batches: 3 x 40 events over both subscriptions, each all-or-nothing.
        for b in range(3):
            batch = [
                _event(f"batch-{b}-{i}-{run}", subs[i % 2], f"{b}.{i:03d}", BASE_TS + 100 * b + i)
                for i in range(40)
            ]
            body, status, answer = client.post("/api/v1/events/batch", {"events": batch})
            assert status == 200, answer
            assert [e["transaction_id"] for e in answer["events"]] == [e["transaction_id"] for e in batch]
            for event in batch:
                expect(event)
            retries.append(("/api/v1/events/batch", body))

        # A client error publishes nothing: one bad event sinks its whole batch.
        bad = [_event(f"never-{run}", sub_a, "1"), _event(f"never-2-{run}", sub_a, "1", "yesterday")]
        _, status, answer = client.post("/api/v1/events/batch", {"events": bad})
        assert status == 422 and answer["error_details"] == {"1": {"timestamp": ["invalid_format"]}}

        # Exact retries of whole requests (the same bytes), as a gateway does after a timeout.
        for path, body in retries:
            _, status, answer = client.post(path, body)
            assert status == 200, answer
            if "event" in answer:
                answers[answer["event"]["transaction_id"]].append(answer["event"])

        expected_sums = {sub: sum(values.values(), Decimal(0)) for sub, values in truth.items()}
        expected_keys = {sub: set(values) for sub, values in truth.items()}

        def all_counted():
            counted = stack.counted(subs)
            return counted if {s: set(rows) for s, rows in counted.items()} == expected_keys else None

        counted = poll(all_counted, f"{sum(map(len, truth.values()))} unique events in events_deduped")
        assert _sums(counted) == expected_sums

        # A conflicting reuse of a transaction_id (another payload): ingest accepts it, process
        # rejects it, and the first payload stays the counted one. Sent only once the original
        # is counted, so "first" is well defined.
        conflict = _event(f"single-3-{run}", sub_b, 700, BASE_TS + 3)
        _, status, answer = client.post("/api/v1/events", {"event": conflict})
        assert status == 200, answer
        rejected = poll(lambda: stack.rejected(subs), "the conflicting reuse in rejected_events_deduped")
        assert [(r["external_subscription_id"], r["transaction_id"], r["reason"]) for r in rejected] == [
            (sub_b, f"single-3-{run}", "transaction_id_reused_with_different_payload")
        ]
        assert json.loads(rejected[0]["properties"])["tokens"] == 700

        time.sleep(1.0)  # anything still in flight is a retry; the counts must not move
        counted = stack.counted(subs)
        assert {s: set(rows) for s, rows in counted.items()} == expected_keys
        assert _sums(counted) == expected_sums
        assert len(stack.rejected(subs)) == 1

        # Reads through the ingest function, in Lago's shape, with the exact decimal text.
        status, got = client.request("GET", f"/api/v1/events/single-1-{run}?external_subscription_id={sub_a}")
        assert status == 200, got
        # The stored event is what ingest answered; created_at is the receipt time of whichever
        # attempt (the original or its retry) process counted first.
        first, retry = answers[f"single-1-{run}"]
        assert {k: v for k, v in first.items() if k != "created_at"} == {k: v for k, v in retry.items() if k != "created_at"}
        assert got["event"]["created_at"] in (first["created_at"], retry["created_at"])
        assert got == {"event": {**first, "created_at": got["event"]["created_at"]}}
        assert got["event"]["properties"] == {"tokens": "0.125", "model": "gpt-4o"}
        assert got["event"]["precise_total_amount_cents"] == "12.345"
        assert got["event"]["timestamp"] == iso_ms((BASE_TS + 1) * 1_000_000) == "2026-01-01T00:00:01.000Z"
        assert set(got["event"]) == {"lago_id", "transaction_id", "lago_customer_id", "code", "timestamp",
                                     "precise_total_amount_cents", "properties", "lago_subscription_id",
                                     "external_subscription_id", "created_at"}

        status, got = client.request("GET", f"/api/v1/events/single-2-{run}?external_subscription_id={sub_a}")
        assert status == 200 and got["event"]["properties"]["tokens"] == "1.000001"
        assert got["event"]["timestamp"] == "2026-01-01T00:00:02.123Z"

        # The conflict did not replace the first payload.
        status, got = client.request("GET", f"/api/v1/events/single-3-{run}?external_subscription_id={sub_b}")
        assert status == 200 and got["event"]["properties"]["tokens"] == 7

        status, got = client.request("GET", f"/api/v1/events/nope-{run}?external_subscription_id={sub_b}")
        assert status == 404

        status, got = client.request("GET", f"/api/v1/events?external_subscription_id={sub_b}&per_page=100")
        assert status == 200, got
        assert got["meta"]["total_count"] == len(truth[sub_b]) == 62
        assert got["meta"]["current_page"] == 1 and got["meta"]["total_pages"] == 1
        listed = {e["transaction_id"]: e for e in got["events"]}
        assert set(listed) == set(truth[sub_b])
        assert all(e["external_subscription_id"] == sub_b and e["lago_customer_id"] is None for e in got["events"])
        # Newest first; the event sent without a timestamp got its time of receipt (now).
        assert got["events"][0]["transaction_id"] == f"single-4-{run}"
        assert listed[f"batch-2-1-{run}"]["properties"] == {"tokens": "2.001", "model": "gpt-4o"}
        assert listed[f"batch-2-1-{run}"]["timestamp"] == iso_ms((BASE_TS + 201) * 1_000_000)

        status, got = client.request("GET", f"/api/v1/events?external_subscription_id={sub_a}&per_page=5&page=2")
        assert status == 200 and len(got["events"]) == 5
        assert got["meta"] == {"current_page": 2, "next_page": 3, "prev_page": 1, "total_pages": 13, "total_count": 62}
    finally:
        client.close()


def test_a_poison_message_does_not_block_the_subscription(stack: Stack):
    garbage = b"\x00\xffnot a meterline message " + uuid.uuid4().hex.encode()
    stack.publisher.publish(stack.topic_path, garbage).result(timeout=30)

    # Good events published after the poison message are counted while it is being retried.
    sub = f"sub-p-{uuid.uuid4().hex[:6]}"
    client = stack.client()
    try:
        batch = [_event(f"after-poison-{i}", sub, str(i), BASE_TS + i) for i in range(1, 21)]
        _, status, answer = client.post("/api/v1/events/batch", {"events": batch})
        assert status == 200, answer
        _, status, answer = client.post("/api/v1/events", {"event": _event("after-poison-single", sub, "0.5")})
        assert status == 200, answer
    finally:
        client.close()
    expected = {f"after-poison-{i}" for i in range(1, 21)} | {"after-poison-single"}
    counted = poll(lambda: (c := stack.counted([sub])) and set(c[sub]) == expected and c, "the good events")
    assert _sums(counted) == {sub: Decimal(210) + Decimal("0.5")}

    # After MAX_DELIVERY_ATTEMPTS failed pushes (each a 5xx from `process`), the emulator moves
    # the poison message to the dead-letter topic.
    def dead_lettered():
        response = stack.subscriber.pull(subscription=stack.dead_letter_pull_path, max_messages=10, timeout=10)
        if response.received_messages:
            stack.subscriber.acknowledge(subscription=stack.dead_letter_pull_path,
                                         ack_ids=[m.ack_id for m in response.received_messages])
        return [m.message.data for m in response.received_messages]

    landed = poll(dead_lettered, "the poison message on the dead-letter topic")
    assert landed == [garbage]
    # The process log shows why: one "poison message" record per attempt.
    assert stack.process.log_tail(400).count("poison message") >= MAX_DELIVERY_ATTEMPTS


# ---------------------------------------------------------------------------
# `process` through functions-framework's test client (no server), embedded runtime
# ---------------------------------------------------------------------------


@pytest.fixture
def process_client(tmp_path) -> Iterator[tuple[Any, Any]]:
    import functions_framework

    from meterline.config import Settings
    from meterline.runtime import build_runtime, set_runtime

    runtime = build_runtime(Settings(backend="embedded", data_dir=tmp_path))
    set_runtime(runtime)
    try:
        app = functions_framework.create_app("process", str(REPO_ROOT / "functions/process/main.py"), "cloudevent")
        yield app.test_client(), runtime
    finally:
        set_runtime(None)


def _pubsub_cloud_event(data: bytes, message_id: str):
    from cloudevents.conversion import to_structured
    from cloudevents.http import CloudEvent

    event = CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": "//pubsub.googleapis.com/projects/test/topics/events",
            "id": message_id,
        },
        {
            "message": {"data": base64.b64encode(data).decode(), "messageId": message_id, "attributes": {}},
            "subscription": "projects/test/subscriptions/process",
        },
    )
    return to_structured(event)


def test_process_acks_valid_and_redelivered_messages_and_retries_garbage(process_client):
    from meterline.core.clock import now_us
    from meterline.core.events import validate_event
    from meterline.core.messages import encode_message

    client, runtime = process_client
    received = now_us()
    events = [validate_event(_event(f"tc-{i}", "sub-tc", f"{i}.5", BASE_TS + i), received) for i in range(10)]
    headers, body = _pubsub_cloud_event(encode_message(events), "m-1")

    def count() -> tuple[int, Decimal]:
        totals = [t for t in runtime.adapters.warehouse.totals("tokens_consumed", "tokens") if t.external_subscription_id == "sub-tc"]
        return (totals[0].events, totals[0].total) if totals else (0, Decimal(0))

    response = client.post("/", headers=headers, data=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert count() == (10, Decimal("50"))  # 0.5 + 1.5 + ... + 9.5

    # Pub/Sub delivers at least once: the same message again is acknowledged and counts nothing.
    headers, body = _pubsub_cloud_event(encode_message(events), "m-1")
    response = client.post("/", headers=headers, data=body)
    assert response.status_code == 200
    assert count() == (10, Decimal("50"))

    # Garbage is answered 5xx, so Pub/Sub retries it and then dead-letters it.
    for data in (b"\x00garbage", b'{"v": 99, "events": []}', b'{"v": 1, "events": [{"t": "x"}]}'):
        headers, body = _pubsub_cloud_event(data, "m-bad")
        response = client.post("/", headers=headers, data=body)
        assert 500 <= response.status_code < 600, data
    assert count() == (10, Decimal("50"))
