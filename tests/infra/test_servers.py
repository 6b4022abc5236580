"""The real local servers start, answer the official clients, and stop for good."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from infra import servers


def _use_env(monkeypatch: pytest.MonkeyPatch, server: servers.LocalServer) -> None:
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)


# ---------------------------------------------------------------------------
# Each server answers a real request from the official client.
# ---------------------------------------------------------------------------


def test_pubsub_publish_and_pull(pubsub_emulator, unique_project, monkeypatch):
    from google.cloud import pubsub_v1

    _use_env(monkeypatch, pubsub_emulator)
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        topic = publisher.topic_path(unique_project, "events")
        subscription = subscriber.subscription_path(unique_project, "events-pull")
        publisher.create_topic(name=topic)
        subscriber.create_subscription(name=subscription, topic=topic)
        publisher.publish(topic, b'{"n": 1}', origin="test").result(timeout=30)

        deadline = time.monotonic() + 30
        received = []
        while not received and time.monotonic() < deadline:
            received = subscriber.pull(subscription=subscription, max_messages=1, timeout=30).received_messages
        assert len(received) == 1
        message = received[0].message
        assert message.data == b'{"n": 1}'
        assert message.attributes["origin"] == "test"
        subscriber.acknowledge(subscription=subscription, ack_ids=[received[0].ack_id])
    finally:
        subscriber.close()
        publisher.stop()


def test_firestore_transaction_and_reset(firestore_emulator, unique_project, monkeypatch):
    from google.cloud import firestore

    _use_env(monkeypatch, firestore_emulator)
    client = firestore.Client(project=unique_project)
    ref = client.collection("counters").document("c1")

    @firestore.transactional
    def increment(transaction):
        snapshot = ref.get(transaction=transaction)
        count = snapshot.get("count") if snapshot.exists else 0
        transaction.set(ref, {"count": count + 1})

    increment(client.transaction())
    increment(client.transaction())
    assert ref.get().to_dict() == {"count": 2}

    firestore_emulator.reset(unique_project)
    assert not ref.get().exists
    client.close()


def test_bigquery_numeric_round_trip(bigquery_emulator):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bigquery_emulator.url},
    )
    dataset = f"ds_{uuid.uuid4().hex[:8]}"
    client.create_dataset(dataset)
    try:
        table = client.create_table(
            bigquery.Table(
                f"test.{dataset}.usage",
                schema=[
                    bigquery.SchemaField("id", "STRING", mode="REQUIRED"),
                    bigquery.SchemaField("amount", "NUMERIC"),
                ],
            )
        )
        # 29 integer digits and 9 decimals: NUMERIC's full precision.
        exact = "12345678901234567890123456789.123456789"
        assert client.insert_rows_json(table, [{"id": "a", "amount": exact}]) == []
        rows = list(client.query(f"SELECT id, amount FROM `test.{dataset}.usage`").result())
        assert [(row.id, row.amount) for row in rows] == [("a", Decimal(exact))]
    finally:
        client.delete_dataset(dataset, delete_contents=True)
        client.close()


def test_stripe_customer_round_trip(stripe_server):
    import stripe

    client = stripe.StripeClient("sk_test_x", base_addresses={"api": stripe_server.url})
    created = client.v1.customers.create(params={"email": "ada@example.com", "name": "Ada"})
    fetched = client.v1.customers.retrieve(created.id)
    assert created.id.startswith("cus_")
    assert (fetched.id, fetched.email, fetched.name) == (created.id, "ada@example.com", "Ada")


def test_env_names(pubsub_emulator, firestore_emulator, bigquery_emulator, stripe_server):
    assert pubsub_emulator.env == {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{pubsub_emulator.port}"}
    assert firestore_emulator.env == {"FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{firestore_emulator.port}"}
    assert bigquery_emulator.env == {"BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{bigquery_emulator.port}"}
    assert stripe_server.env == {"STRIPE_API_BASE": f"http://127.0.0.1:{stripe_server.port}"}


# ---------------------------------------------------------------------------
# Lifecycle: stop() ends the whole process group; failures are explained.
# ---------------------------------------------------------------------------


@pytest.mark.servers
@pytest.mark.parametrize("name", sorted(servers.SERVERS))
def test_stop_ends_the_process(name):
    with servers.SERVERS[name]() as server:
        pid, port = server.pid, server.port
        os.kill(pid, 0)  # alive
        assert server.host == "127.0.0.1" and server.url.endswith(f":{port}")
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing left in its group either (e.g. a java child)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    server.stop()  # idempotent


def test_missing_sdk_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CLOUDSDK_ROOT", "/nonexistent-sdk")
    servers.sdk_root.cache_clear()
    try:
        with pytest.raises(servers.ServerUnavailable, match="Pub/Sub emulator not found at /nonexistent-sdk/"):
            servers.start_pubsub_emulator()
        with pytest.raises(servers.ServerUnavailable, match="cloud-firestore-emulator components and Java 17"):
            servers.start_firestore_emulator()
    finally:
        monkeypatch.delenv("CLOUDSDK_ROOT")
        servers.sdk_root.cache_clear()


def test_not_ready_in_time_shows_the_log_tail():
    workdirs: list[Path] = []

    def launch(port: int, workdir: Path, log: Path) -> servers.LocalServer:
        workdirs.append(workdir)
        cmd = [sys.executable, "-c", "print('listening soon, honest'); import time; time.sleep(60)"]
        proc = servers._spawn(cmd, workdir, log)
        server = servers.LocalServer("sleepy", "127.0.0.1", port, f"http://127.0.0.1:{port}", {}, proc.pid, log, proc, workdir)
        servers._wait_ready(server, 1.0, lambda: False)
        return server

    with pytest.raises(servers.ServerStartError, match=r"(?s)not ready .* after 1 s.*listening soon, honest"):
        servers._start_with_retry("sleepy", launch)
    assert len(workdirs) == 1  # no retry: not a port clash
    shutil.rmtree(workdirs[0])


def test_running_stops_what_it_started_when_a_later_start_fails():
    stopped = []

    class Started:
        env = {"A_HOST": "127.0.0.1:1"}

        def stop(self):
            stopped.append(self)

    first = Started()

    def broken():
        raise servers.ServerStartError("injected")

    with pytest.raises(servers.ServerStartError):
        with servers.running(lambda: first, broken):
            pass
    assert stopped == [first]

    second = Started()
    with servers.running(lambda: first, lambda: second) as (started, env):
        assert started == [first, second] and env == {"A_HOST": "127.0.0.1:1"}
    assert stopped == [first, second, first]  # the block's end stops both, in reverse
