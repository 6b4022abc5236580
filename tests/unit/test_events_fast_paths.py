"""The hand-optimised helpers on ingest's hot path give exactly what the standard library gives."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterline.events import _LAGO_ID_NS, decode_json, iso_ms, uuid5_text

MAX_US = 253402300799 * 1_000_000 + 999_999


@given(st.text(max_size=300))
def test_uuid5_text_is_uuid5(name):
    assert uuid5_text(name) == str(uuid.uuid5(_LAGO_ID_NS, name))


@given(st.integers(min_value=0, max_value=MAX_US))
def test_iso_ms_matches_datetime_formatting(us):
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    assert iso_ms(us) == f"{dt:%Y-%m-%dT%H:%M:%S}.{(us % 1_000_000) // 1000:03d}Z"


@given(st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5)
    | st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**6, max_value=10**6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4),
    max_leaves=20,
))
def test_decode_json_keeps_every_number_exact(value):
    def dump(v):
        if isinstance(v, Decimal):
            return format(v, "f")
        if isinstance(v, bool) or v is None:
            return {True: "true", False: "false", None: "null"}[v]
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            import json
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ",".join(dump(x) for x in v) + "]"
        import json
        return "{" + ",".join(f"{json.dumps(k)}:{dump(x)}" for k, x in v.items()) + "}"

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
