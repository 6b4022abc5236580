"""Dead letters are visible and replayable, and a stuck claim never blocks a corrected resend.

* Embedded: a message that fails every attempt is dead-lettered, `meterline dead-letters list`
  shows it with its reason (never its payload), the cause is fixed, `replay` queues it again
  (exactly once, even when run twice) and every event is counted once.
* GCP (emulators, pull subscriptions: REFERENCE §1, push retries are unreliable there): a
  message dead-lettered by the subscription's policy and one put aside by process are listed
  and replayed from the dead-letter subscription, and counted once.
* Both dedup stores: the stale-claim rule of `services/process.py`.
"""

from __future__ import annotations

import time

import orjson
import pytest

from meterline.core.clock import now_us
from meterline.core.events import validate_event
from meterline.core.messages import encode_message
from meterline.local import cli
from meterline.local.worker import drain_once
from meterline.ports import Claim
from meterline.services.process import ProcessService
from tests.support import embedded_runtime


def _event(txn: str, sub: str, value: int):
    return validate_event(
        {"transaction_id": txn, "external_subscription_id": sub, "code": "tokens", "timestamp": 1767225600,
         "properties": {"value": value}},
        now_us(),
    )


def _batch(sub: str, n: int, value: int = 7) -> bytes:
    return orjson.dumps({"events": [
        {"transaction_id": f"{sub}-{i}", "external_subscription_id": sub, "code": "tokens",
         "timestamp": 1767225600 + i, "properties": {"value": value}}
        for i in range(n)
    ]})


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# -- embedded ------------------------------------------------------------------------------


def test_embedded_dead_letters_are_listed_replayed_once_and_counted_exactly(tmp_path, capsys, monkeypatch):
    runtime = embedded_runtime(tmp_path, max_delivery_attempts=3)
    warehouse = runtime.adapters.warehouse
    queue = runtime.queue
    service = runtime.process.service

    # The cause: the warehouse refuses one subscription's rows (after their claims were written).
    broken = True
    insert = warehouse.insert_events

    def failing_insert(events, processed_at_us):
        if broken and any(e.external_subscription_id == "sub-broken" for e in events):
            raise RuntimeError("warehouse refused the rows")
        return insert(events, processed_at_us)

    monkeypatch.setattr(warehouse, "insert_events", failing_insert)

    runtime.ingest.service.create_batch(_batch("sub-broken", 5))
    runtime.ingest.service.create_batch(_batch("sub-ok", 3))
    queue.publish(b"not a meterline message", {})

    def drain() -> None:
        deadline = time.monotonic() + 30
        while queue.depth() and time.monotonic() < deadline:
            drain_once(queue, service)
            time.sleep(0.05)  # a failed message comes back after its 0.2 s backoff
        assert queue.depth() == 0

    drain()
    assert warehouse.list_events("sub-ok", 100, 0)[1] == 3  # the rest was never blocked
    assert warehouse.list_events("sub-broken", 100, 0)[1] == 0

    code, out, err = _run_cli(capsys, "dead-letters", "list", "--data-dir", str(tmp_path), "--format", "json")
    assert code == 0, err
    listed = orjson.loads(out)
    assert [(d["attempts"], d["events"]) for d in listed] == [(3, 5), (3, "undecodable")]
    assert "warehouse refused the rows" in listed[0]["reason"] and "RuntimeError" in listed[0]["reason"]
    assert "undecodable" in listed[1]["reason"]
    assert "sub-broken" not in out and "not a meterline" not in out  # never a payload
    assert all(d["age"].endswith("s") for d in listed)
    broken_id, poison_id = listed[0]["id"], listed[1]["id"]

    # Fix the cause, then replay that message only; twice, as an operator might.
    broken = False
    code, out, err = _run_cli(capsys, "dead-letters", "replay", "--id", broken_id, "--data-dir", str(tmp_path))
    assert code == 0 and out.strip() == f"replayed 1 dead letter(s): {broken_id}"
    assert queue.depth() == 1
    code, out, err = _run_cli(capsys, "dead-letters", "replay", "--id", broken_id, "--data-dir", str(tmp_path))
    assert code == 1 and "replayed 0" in out and broken_id in err
    assert queue.depth() == 1  # not enqueued twice
    drain()

    events, total = warehouse.list_events("sub-broken", 100, 0)
    assert total == 5 and sorted(e.transaction_id for e in events) == [f"sub-broken-{i}" for i in range(5)]
    assert [t.total for t in warehouse.totals("tokens", "value") if t.external_subscription_id == "sub-broken"] == [35]
    assert [d.id for d in runtime.adapters.dead_letter_queue.all()] == [poison_id]  # the poison stays

    # --all replays what is left; run again, it finds nothing.
    assert runtime.adapters.dead_letter_queue.replay() == [poison_id]
    assert runtime.adapters.dead_letter_queue.replay() == []
    assert queue.depth() == 1


def test_embedded_a_corrected_resend_wins_at_once_over_a_dead_lettered_message(tmp_path, monkeypatch):
    """The embedded queue knows when it dead-letters: the message's pending claims become stale
    at once, so a corrected resend (same key, another payload) is counted without waiting the
    takeover time; the dead letter, replayed afterwards, is the one rejected."""
    runtime = embedded_runtime(tmp_path, max_delivery_attempts=2)  # claim_takeover_seconds: the default
    warehouse, queue, service = runtime.adapters.warehouse, runtime.queue, runtime.process.service
    insert = warehouse.insert_events

    def refuse_666(events, processed_at_us):  # a value the warehouse cannot store
        if any(e.properties.get("value") == 666 for e in events):
            raise RuntimeError("out of range")
        return insert(events, processed_at_us)

    monkeypatch.setattr(warehouse, "insert_events", refuse_666)

    def drain() -> None:
        deadline = time.monotonic() + 30
        while queue.depth() and time.monotonic() < deadline:
            drain_once(queue, service)
            time.sleep(0.05)

    def send(values: list[int]) -> None:
        runtime.ingest.service.create_batch(orjson.dumps({"events": [
            {"transaction_id": f"t{i}", "external_subscription_id": "sub-c", "code": "tokens",
             "timestamp": 1767225600, "properties": {"value": v}} for i, v in enumerate(values)
        ]}))
        drain()

    send([666, 5])
    assert len(runtime.adapters.dead_letter_queue.all()) == 1 and warehouse.list_events("sub-c", 10, 0)[1] == 0

    send([6, 5])  # the corrected batch: t0 takes its key over, t1 is a plain retry of its claim
    assert {e.transaction_id: e.properties["value"] for e in warehouse.list_events("sub-c", 10, 0)[0]} == {"t0": 6, "t1": 5}

    assert len(runtime.adapters.dead_letter_queue.replay()) == 1  # the old message, replayed anyway
    drain()
    assert {e.transaction_id: e.properties["value"] for e in warehouse.list_events("sub-c", 10, 0)[0]} == {"t0": 6, "t1": 5}
    assert warehouse.count_rejected() == 1  # t0's first payload, for finance
    assert runtime.adapters.dead_letter_queue.all() == []


def test_embedded_replay_is_one_transaction(tmp_path):
    """A dead letter is either still a dead letter or queued again, never both or neither."""
    from meterline.adapters.embedded.sqlite import SqliteDatabase
    from meterline.adapters.embedded.sqlite_queue import SqliteDeadLetters, SqliteQueue

    db = SqliteDatabase(tmp_path / "m.sqlite")
    queue = SqliteQueue(db, max_attempts=1)
    letters = SqliteDeadLetters(queue)
    ids = [letters.publish(encode_message([_event(f"t{i}", "s", i)]), {"reason": "test"}) for i in range(3)]
    replayed = letters.replay([ids[1], "999", "not-a-number"])
    assert replayed == [ids[1]]
    assert queue.depth() == 1 and [d.id for d in letters.all()] == [ids[0], ids[2]]
    (message,) = queue.lease(10)
    assert message.attempts == 1  # attempts start again from zero


# -- the stale-claim rule, on both dedup stores ------------------------------------------------


def test_a_fresh_pending_claim_keeps_the_first_payload(backend):
    first, corrected = _event("t1", "sub-s", 1), _event("t1", "sub-s", 2)
    assert backend.dedup.claim([first]) == [Claim.NEW]  # then its message was dead-lettered
    result = ProcessService(backend.dedup, backend.warehouse).handle_events([corrected])
    assert (result.inserted, result.rejected) == (0, 1)  # within the takeover time: first wins


def test_a_corrected_resend_takes_over_a_stale_claim_whose_event_was_never_stored(backend):
    first, corrected = _event("t1", "sub-s", 1), _event("t1", "sub-s", 2)
    assert backend.dedup.claim([first]) == [Claim.NEW]  # claimed; the insert failed every time
    service = ProcessService(backend.dedup, backend.warehouse, claim_takeover_seconds=0.0)

    result = service.handle_events([corrected])
    assert (result.inserted, result.rejected) == (1, 0)
    assert backend.warehouse.get_event("sub-s", "t1") == corrected

    # The first payload's dead letter, replayed later, is the one rejected.
    result = service.handle_events([first])
    assert (result.inserted, result.rejected) == (0, 1)
    assert backend.warehouse.get_event("sub-s", "t1") == corrected
    assert backend.warehouse.list_events("sub-s", 10, 0)[1] == 1


def test_a_stale_claim_whose_event_is_stored_stays_with_the_first_payload(backend):
    first, corrected = _event("t1", "sub-s", 1), _event("t1", "sub-s", 2)
    assert backend.dedup.claim([first]) == [Claim.NEW]
    backend.warehouse.insert_events([first], now_us())  # inserted; the attempt died before its ack
    service = ProcessService(backend.dedup, backend.warehouse, claim_takeover_seconds=0.0)

    result = service.handle_events([corrected])
    assert (result.inserted, result.rejected) == (0, 1)  # a true conflict: the first one is counted
    assert backend.warehouse.get_event("sub-s", "t1") == first

    # Its redelivery or replay, past the window: the warehouse has it, so nothing is written.
    for _ in range(2):
        result = service.handle_events([first])
        assert (result.inserted, result.duplicates) == (0, 1)
    assert backend.warehouse._query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 1


def test_a_settled_claim_whose_event_was_never_stored_is_inserted_once(backend):
    event = _event("t1", "sub-s", 1)
    assert backend.dedup.claim([event]) == [Claim.NEW]  # claimed; the insert failed, then a long pause
    service = ProcessService(backend.dedup, backend.warehouse, claim_takeover_seconds=0.0)
    assert (service.handle_events([event]).inserted, service.handle_events([event]).duplicates) == (1, 1)
    assert backend.warehouse._query("SELECT COUNT(*) AS n FROM events")[0]["n"] == 1


def test_every_attempt_refreshes_its_claim(backend):
    first, corrected = _event("t1", "sub-s", 1), _event("t1", "sub-s", 2)
    dedup = backend.dedup
    assert dedup.claim([first]) == [Claim.NEW]
    time.sleep(0.5)
    assert dedup.claim([first]) == [Claim.RETRY]  # an attempt is alive: the claim is fresh again
    assert dedup.claim([corrected], stale_after_s=0.4) == [Claim.CONFLICT]
    time.sleep(0.5)
    assert dedup.claim([corrected], stale_after_s=0.4) == [Claim.STALE]
    assert dedup.claim([corrected], stale_after_s=0.4, take_over=True) == [Claim.NEW]
    assert dedup.claim([corrected]) == [Claim.RETRY]
    assert dedup.claim([first]) == [Claim.CONFLICT]
    # The same payload, claimed longer ago than the window: the warehouse must say.
    time.sleep(0.5)
    assert dedup.claim([corrected], stale_after_s=0.4) == [Claim.SETTLED]
    assert dedup.claim([corrected], stale_after_s=0.4, take_over=True) == [Claim.RETRY]  # claimed anew
    assert dedup.claim([corrected], stale_after_s=0.4) == [Claim.RETRY]


def test_a_message_with_one_known_key_claims_the_others(backend):
    known, fresh = _event("t1", "sub-s", 1), [_event(f"n{i}", "sub-s", i) for i in range(5)]
    assert backend.dedup.claim([known]) == [Claim.NEW]
    # The all-new fast path (GCP: create-only) is refused as a whole; the keys are then decided one by one.
    assert backend.dedup.claim([*fresh[:2], known, *fresh[2:]]) == [Claim.NEW] * 2 + [Claim.RETRY] + [Claim.NEW] * 3
    assert backend.dedup.claim(fresh) == [Claim.RETRY] * 5


def test_new_keys_are_claimed_with_one_write_and_no_read(backend):
    """The one Firestore cost paid per event (docs/cost.md): a new key is created, never read first."""
    from meterline.adapters.gcp.firestore_dedup import FirestoreDedupStore

    store = backend.dedup
    if not isinstance(store, FirestoreDedupStore):
        pytest.skip("an embedded claim costs nothing; the cut is Firestore's")
    reads: list[int] = []

    class Counting:
        def __init__(self, inner):
            self._inner = inner

        def get_all(self, refs, **kwargs):
            refs = list(refs)
            reads.append(len(refs))
            return self._inner.get_all(refs, **kwargs)

        def __getattr__(self, name):
            return getattr(self._inner, name)

    store._client = Counting(store._client)
    batch = [_event(f"c{i}", "sub-c", i) for i in range(100)]
    assert store.claim(batch) == [Claim.NEW] * 100
    assert reads == []
    assert store.claim(batch[:3]) == [Claim.RETRY] * 3  # a redelivery: refused whole, then read
    assert reads == [3]


# -- GCP: the dead-letter subscription ---------------------------------------------------------


@pytest.fixture
def gcp(request, monkeypatch):
    from tests.harness.backends import gcp_backend

    return gcp_backend(request, monkeypatch)


@pytest.mark.servers
def test_gcp_dead_letters_are_listed_and_replayed_from_the_dead_letter_subscription(gcp, monkeypatch):
    from google.cloud import pubsub_v1

    from meterline.adapters.gcp.clients import publisher_client
    from meterline.adapters.gcp.dead_letters import PubSubDeadLetters
    from meterline.adapters.gcp.pubsub_bus import PubSubEventBus

    project = gcp.bus.topic_path.split("/")[1]
    publisher, subscriber = publisher_client(), pubsub_v1.SubscriberClient()
    dead_topic = publisher.topic_path(project, "events-dead-letter")
    publisher.create_topic(name=dead_topic)
    dead_sub = subscriber.subscription_path(project, "events-dead-letter")
    subscriber.create_subscription(name=dead_sub, topic=dead_topic)
    process_sub = subscriber.subscription_path(project, "process-pull")
    subscriber.create_subscription(request={
        "name": process_sub, "topic": gcp.bus.topic_path, "ack_deadline_seconds": 60,
        "dead_letter_policy": {"dead_letter_topic": dead_topic, "max_delivery_attempts": 5},
    })

    warehouse = gcp.warehouse
    broken = True
    insert = warehouse.insert_events

    def failing_insert(events, processed_at_us):
        if broken:
            raise RuntimeError("warehouse refused the rows")
        return insert(events, processed_at_us)

    monkeypatch.setattr(warehouse, "insert_events", failing_insert)
    service = ProcessService(gcp.dedup, warehouse)

    def process_pulled(expect: int) -> list[dict]:
        """Pull and process like the function: ack on success, nack (deadline 0) on failure."""
        seen = []
        deadline = time.monotonic() + 60
        while len(seen) < expect and time.monotonic() < deadline:
            response = subscriber.pull(subscription=process_sub, max_messages=10, timeout=10)
            for rm in response.received_messages:
                seen.append(dict(rm.message.attributes))
                try:
                    service.handle_message(rm.message.data)
                except Exception:  # noqa: BLE001 - as the process function: any failure is a nack
                    subscriber.modify_ack_deadline(subscription=process_sub, ack_ids=[rm.ack_id], ack_deadline_seconds=0)
                else:
                    subscriber.acknowledge(subscription=process_sub, ack_ids=[rm.ack_id])
        assert len(seen) == expect
        return seen

    gcp.bus.publish(encode_message([_event(f"a{i}", "sub-a", 3) for i in range(4)]), {"count": "4"})
    process_pulled(5)  # five failed attempts: the policy moves it to the dead-letter topic...
    # ...which the emulator does when the message would be delivered a sixth time (measured).
    assert subscriber.pull(subscription=process_sub, max_messages=10, timeout=10).received_messages == []
    # process's own path: a message past the maximum age, copied to the dead-letter topic
    PubSubEventBus(publisher, project, "events-dead-letter").publish(
        encode_message([_event("b1", "sub-b", 9)]), {"reason": "max_age_exceeded", "message_id": "m-old"}
    )

    letters = PubSubDeadLetters(subscriber, dead_sub, gcp.bus)
    deadline = time.monotonic() + 30
    listed = letters.all()
    while len(listed) < 2 and time.monotonic() < deadline:
        listed = letters.all()
    assert len(listed) == 2
    by_reason = {("max_age" in d.reason): d for d in listed}
    exhausted, too_old = by_reason[False], by_reason[True]
    assert (exhausted.attempts, exhausted.events) == (5, 4) and "process-pull" in exhausted.reason
    assert (too_old.attempts, too_old.events, too_old.reason) == (None, 1, "max_age_exceeded")
    assert {d.id for d in letters.all()} == {exhausted.id, too_old.id}  # listing hands them back

    broken = False  # the cause is fixed
    assert letters.replay([exhausted.id]) == [exhausted.id]
    (attributes,) = process_pulled(1)
    assert attributes["replay_of"] == exhausted.id and not any(k.startswith("CloudPubSub") for k in attributes)
    assert warehouse.list_events("sub-a", 100, 0)[1] == 4  # pending claims: RETRY, inserted once

    assert letters.replay() == [too_old.id]
    (attributes,) = process_pulled(1)
    assert "reason" not in attributes
    assert warehouse.list_events("sub-b", 100, 0)[1] == 1
    assert letters.all() == []
    # Replaying the same message again (a crash before its ack) is absorbed by dedup.
    gcp.bus.publish(encode_message([_event(f"a{i}", "sub-a", 3) for i in range(4)]), {"replay_of": exhausted.id})
    process_pulled(1)
    assert warehouse.list_events("sub-a", 100, 0)[1] == 4
    assert [t.total for t in warehouse.totals("tokens", "value") if t.external_subscription_id == "sub-a"] == [12]
