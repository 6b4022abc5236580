"""Lago's gateway SDK (`lago-agent-sdk`, pinned in requirements-dev.txt) against Meterline.

The SDK wraps an LLM client, turns each answer's token usage into Lago events, and flushes them
in batches to POST {api_url}/events/batch. Here it wraps a fake OpenAI client (no network, no
openai package) and is pointed at Meterline; the only connections allowed in the test are to
the loopback server. What the SDK posted must be what Meterline counted.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from lago_agent_sdk import LagoConfig, LagoSDK

from tests.compat.fake_openai import FakeOpenAI
from tests.compat.targets import find_event, unique

USAGE = {
    "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 200}, "completion_tokens_details": {"reasoning_tokens": 50},
}


class NoPricing:
    """Token mode needs no price table; this stands in so nothing could fetch one."""

    def maybe_refresh(self) -> None:
        pass

    def prime(self, *args: Any, **kwargs: Any) -> None:
        pass

    def lookup(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.fixture
def loopback_only(monkeypatch):
    """Refuse any connection that does not stay on this machine."""
    real = socket.create_connection

    def connect(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"the test tried to reach {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", connect)


def test_the_agent_sdk_wraps_an_llm_answer_and_its_batch_is_counted(own_target, loopback_only):
    subscription = unique("sub")
    errors: list[tuple[Exception, str]] = []
    config = LagoConfig(
        api_key=own_target.api_key, api_url=f"{own_target.url}/api/v1", default_subscription_id=subscription,
        flush_interval_seconds=0.05, on_error=lambda exc, where: errors.append((exc, where)), pricing_provider=NoPricing(),
    )
    sdk = LagoSDK(own_target.api_key, config=config)
    sent: list[list[dict[str, Any]]] = []
    real_send = sdk._lago_client.send_batch

    def spy(events: list[dict[str, Any]]) -> None:  # records each batch, then really posts it
        sent.append([dict(e) for e in events])
        real_send(events)

    sdk._queue._sender = spy
    llm = sdk.wrap(FakeOpenAI(USAGE))
    try:
        for turn in range(3):
            answer = llm.chat.completions.create(model="gpt-4o-2024-08-06", messages=[{"role": "user", "content": f"hi {turn}"}])
            assert answer["choices"][0]["message"]["content"] == "Hello!"  # the caller's answer, untouched
        assert sdk.flush(timeout=30), "the SDK could not deliver its batch"
    finally:
        sdk.shutdown(timeout=10)
    assert errors == []

    events = [e for batch in sent for e in batch]
    # One event per nonzero token kind per call, under the SDK's default metric codes.
    assert sorted(e["code"] for e in events) == sorted(
        ["llm_input_tokens", "llm_output_tokens", "llm_cached_input_tokens", "llm_reasoning_tokens"] * 3)
    assert {e["external_subscription_id"] for e in events} == {subscription}

    lago = own_target.client()
    for event in events:  # read back through Lago's own client...
        found = find_event(lago, event["transaction_id"], subscription)
        assert (found.code, found.properties) == (event["code"], event["properties"])
    with own_target.warehouse() as warehouse:  # ...and from the events table
        for event in events:
            stored = warehouse.get_event(subscription, event["transaction_id"])
            assert stored is not None, event
            assert (stored.code, stored.properties) == (event["code"], event["properties"])
            assert stored.timestamp_us == event["timestamp"] * 1_000_000
    assert {e["properties"]["model"] for e in events} == {"gpt-4o-2024-08-06"}
