"""PubSubEventBus's group commit: every request is confirmed once, failures fail only their RPC.

The RPC is replaced by a fake (a real emulator cannot be made to fail or stall on cue); the
bus against the real Pub/Sub emulator is exercised by tests/contract and tests/e2e.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from google.api_core import exceptions as core_exceptions
from google.cloud import pubsub_v1

from meterline.adapters.gcp.pubsub_bus import PubSubEventBus
from meterline.ports import PublishFailed


class FakeRpc:
    def __init__(self, delay=0.01, fail_calls=(), stall=None):
        self.delay = delay
        self.fail_calls = set(fail_calls)
        self.stall = stall  # an Event the RPC waits on
        self.calls: list[list[bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, messages):
        with self.lock:
            n = len(self.calls)
            self.calls.append([m.data for m in messages])
        if self.stall is not None:
            self.stall.wait(10)
        time.sleep(self.delay)
        if n in self.fail_calls:
            raise core_exceptions.ServiceUnavailable("injected")
        return SimpleNamespace(message_ids=[f"id-{n}-{i}" for i in range(len(messages))])


@pytest.fixture
def bus_with(monkeypatch):
    def make(rpc: FakeRpc, timeout: float = 5.0) -> PubSubEventBus:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # never dialled: the RPC is fake
        bus = PubSubEventBus(pubsub_v1.PublisherClient(), "p", "t", timeout_seconds=timeout)
        bus._rpc = rpc
        return bus

    return make


def publish_concurrently(bus, n):
    results: dict[int, object] = {}

    def one(i):
        try:
            results[i] = bus.publish(f"m{i}".encode(), {"count": "1"})
        except PublishFailed as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_requests_share_rpcs_and_each_is_sent_once(bus_with):
    rpc = FakeRpc(delay=0.02)
    results = publish_concurrently(bus_with(rpc), 64)
    sent = [d for call in rpc.calls for d in call]
    assert sorted(sent) == sorted(f"m{i}".encode() for i in range(64))  # each exactly once
    assert len(rpc.calls) < 64  # requests that queued during an RPC went together
    assert all(isinstance(r, str) for r in results.values())
    assert len(set(results.values())) == 64  # each request got its own message id


def test_a_failed_rpc_fails_only_its_requests_and_the_lane_goes_on(bus_with):
    rpc = FakeRpc(delay=0.02, fail_calls={0})
    bus = bus_with(rpc)
    results = publish_concurrently(bus, 20)
    failed = {i for i, r in results.items() if isinstance(r, PublishFailed)}
    first_batch = {int(d[1:]) for d in rpc.calls[0]}
    assert failed == first_batch and failed  # exactly the first RPC's requests failed
    assert bus.publish(b"after", {}).startswith("id-")  # not stuck


def test_a_request_that_never_got_sent_is_not_published_after_its_timeout(bus_with):
    stall = threading.Event()
    rpc = FakeRpc(delay=0, stall=stall)
    bus = bus_with(rpc, timeout=0.3)
    # The fake RPC ignores its deadline (a real one would fail it); the leader succeeds late.
    leader = threading.Thread(target=bus.publish, args=(b"first", {}))
    leader.start()
    time.sleep(0.05)  # the first RPC is in flight and stalled
    with pytest.raises(PublishFailed):
        bus.publish(b"queued", {})  # waits behind it, times out, and is withdrawn
    stall.set()
    leader.join(10)
    bus.publish(b"later", {})
    sent = [d for call in rpc.calls for d in call]
    assert b"queued" not in sent  # answered 503, so it must never be published
    assert sent.count(b"later") == 1


def test_linger_lets_concurrent_requests_share_one_rpc(bus_with, monkeypatch):
    rpc = FakeRpc(delay=0.001)
    bus = bus_with(rpc)
    monkeypatch.setattr(bus, "_linger", 0.05)
    bus.publish(b"traffic", {})  # a request just before: the lane is under traffic
    results = publish_concurrently(bus, 16)
    assert all(isinstance(r, str) for r in results.values())
    # Without the linger the burst's first request would go alone; with it, its RPC has company.
    assert len(rpc.calls[1]) > 1
    assert sum(len(c) for c in rpc.calls) == 17


def test_a_lone_request_does_not_linger(bus_with, monkeypatch):
    rpc = FakeRpc(delay=0.001)
    bus = bus_with(rpc)
    monkeypatch.setattr(bus, "_linger", 0.5)
    started = time.monotonic()
    assert bus.publish(b"alone", {}) == "id-0-0"
    # No other request within the linger window: it sends at once, not after 0.5 s.
    assert time.monotonic() - started < 0.25
    time.sleep(0.01)
    started = time.monotonic()
    bus.publish(b"soon after", {})  # 10 ms after the first, within the window: it lingers
    assert time.monotonic() - started >= 0.5
