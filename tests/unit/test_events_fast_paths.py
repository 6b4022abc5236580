"""The hand-optimised helpers on ingest's hot path give exactly what the standard library gives."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterline.core import events
from meterline.core.clock import iso_ms
from meterline.core.errors import ValidationFailed
from meterline.core.events import (
    _LAGO_ID_NS,
    decode_json,
    parse_batch,
    parse_batch_body,
    parse_single,
    parse_single_body,
    uuid5_text,
)

MAX_US = 253402300799 * 1_000_000 + 999_999


def dump(v) -> str:
    """JSON text in which a Decimal is written as a number with exactly its digits."""
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    return "{" + ",".join(f"{json.dumps(k)}:{dump(x)}" for k, x in v.items()) + "}"



@given(st.text(max_size=300))
def test_uuid5_text_is_uuid5(name):
    assert uuid5_text(name) == str(uuid.uuid5(_LAGO_ID_NS, name))


@given(st.integers(min_value=0, max_value=MAX_US))
def test_iso_ms_matches_datetime_formatting(us):
    dt = datetime.fromtimestamp(us // 1_000_000, tz=UTC)
    assert iso_ms(us) == f"{dt:%Y-%m-%dT%H:%M:%S}.{(us % 1_000_000) // 1000:03d}Z"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**6, max_value=10**6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_decode_json_keeps_every_number_exact(value):
    def exact(v):
        # A fraction becomes a Decimal equal to the text; an integral Decimal was written without
        # a point, so it comes back as an int.
        if isinstance(v, Decimal):
            return v if "." in format(v, "f") else int(v)
        if isinstance(v, list):
            return [exact(x) for x in v]
        if isinstance(v, dict):
            return {k: exact(x) for k, x in v.items()}
        return v

    def has_float(v):
        if isinstance(v, float):
            return True
        if isinstance(v, list):
            return any(has_float(x) for x in v)
        return isinstance(v, dict) and any(has_float(x) for x in v.values())

    decoded = decode_json(dump(value).encode())
    assert decoded == exact(value)
    assert not has_float(decoded)


def test_decode_json_reads_floats_as_their_exact_text():
    assert decode_json(b'{"v": 0.1, "w": [1.10, 3]}') == {"v": Decimal("0.1"), "w": [Decimal("1.10"), 3]}
    assert decode_json(b'{"big": 123456789012345678901234567890}') == {"big": 123456789012345678901234567890}


# The ingest path decodes with orjson and reads the body a second time, exactly, only when
# validation meets a float (events.InexactNumber); it must give what the exact decoder gives.
EVENT_FIELDS = st.fixed_dictionaries(
    {"transaction_id": st.text(min_size=1, max_size=4) | st.integers(0, 99), "external_subscription_id": st.just("s"),
     "code": st.just("tokens")},
    optional={
        "timestamp": st.integers(0, 2_000_000_000) | st.decimals(min_value=0, max_value=2_000_000_000, places=6),
        "precise_total_amount_cents": st.integers(-10, 10**6) | st.decimals(min_value=-10, max_value=10**6, places=3),
        "properties": st.dictionaries(st.text(max_size=3), JSON_VALUES, max_size=4) | JSON_VALUES,
        "extra": JSON_VALUES,
    },
)


def _outcome(parse, *args):
    try:
        return parse(*args)
    except ValidationFailed as failure:
        return ("422", failure.details)


@given(EVENT_FIELDS)
def test_single_body_parses_as_the_exact_decoder_does(event):
    body = dump({"event": event}).encode()
    assert _outcome(parse_single_body, body, 7) == _outcome(parse_single, decode_json(body), 7)


@given(st.lists(EVENT_FIELDS, min_size=1, max_size=5))
def test_batch_body_parses_as_the_exact_decoder_does(batch):
    body = dump({"events": batch}).encode()
    assert _outcome(parse_batch_body, body, 7) == _outcome(parse_batch, decode_json(body), 7)


def test_nested_fractions_are_stored_as_their_exact_text():
    # They used to stay Decimals inside nested properties, which no JSON encoder takes: a 500.
    body = (b'{"event": {"transaction_id": "t", "external_subscription_id": "s", "code": "c", '
            b'"properties": {"v": 1.10, "meta": {"x": 0.5, "l": [1.25, 2, {"y": 3.0}]}}}}')
    event = parse_single_body(body, 7)
    assert event.properties == {"v": "1.10", "meta": {"x": "0.5", "l": ["1.25", 2, {"y": "3.0"}]}}
    assert event.to_lago()["properties"] == event.properties
    assert len(event.payload_hash()) == 32  # hashable: the process step needs it


def test_a_body_without_floats_is_decoded_once(monkeypatch):
    def refuse(body):
        raise AssertionError("read a second time")

    monkeypatch.setattr(events, "read_json_exact", refuse)
    body = json.dumps({"events": [
        {"transaction_id": f"t{i}", "external_subscription_id": "s", "code": "c", "timestamp": 1767225600 + i,
         "properties": {"tokens": "12.5", "model": "gpt-4.1", "n": 3, "meta": {"ok": True}}} for i in range(100)
    ]}).encode()
    assert len(parse_batch_body(body, 7)) == 100


# The same, at the numeric domain's edges, with a metric reading "v": integers beyond 64 bits
# (orjson reads them as floats), fractions past nine places, exponents, and deep properties.
EDGE_NUMBERS = (st.integers(-(2**70), 2**70) | st.sampled_from([10**18 - 1, 10**18, 2**63, -(2**63) - 1])
                | st.decimals(allow_nan=False, allow_infinity=False)
                | st.decimals(min_value=-(10**19), max_value=10**19, places=11))
EDGE_FIELDS = st.fixed_dictionaries(
    {"transaction_id": st.text(min_size=1, max_size=4) | st.integers(0, 2**70), "external_subscription_id": st.just("s"),
     "code": st.just("tokens")},
    optional={
        "precise_total_amount_cents": EDGE_NUMBERS,
        "properties": st.fixed_dictionaries({"v": EDGE_NUMBERS}, optional={"deep": st.integers(1, 40).map(
            lambda n: functools.reduce(lambda inner, _: {"a": inner}, range(n), 1)), "big": EDGE_NUMBERS}),
    },
)
READS_V = {"tokens": "v"}.get


@given(st.lists(EDGE_FIELDS, min_size=1, max_size=3))
def test_the_fast_path_judges_the_numeric_domain_as_the_exact_decoder_does(batch):
    body = dump({"events": batch}).encode()
    assert _outcome(parse_batch_body, body, 7, READS_V) == _outcome(parse_batch, decode_json(body), 7, READS_V)
