"""The bus message format, in its one home (core.messages): ingest encodes, process decodes."""

from __future__ import annotations

import orjson
import pytest

from meterline.core.events import parse_batch_body
from meterline.core.messages import MESSAGE_VERSION, UndecodableMessage, decode_message, encode_message

BODY = orjson.dumps({"events": [
    {"transaction_id": "a", "external_subscription_id": "s", "code": "tokens", "timestamp": 1767225600,
     "properties": {"value": "1.50", "model": "gpt-4o"}, "precise_total_amount_cents": "12.345"},
    {"transaction_id": "b", "external_subscription_id": "s", "code": "tokens", "properties": {"value": 7}},
]})


def test_a_message_decodes_to_the_events_that_were_encoded():
    events = parse_batch_body(BODY, 1_767_225_600_123_456)
    assert decode_message(encode_message(events)) == events
    assert orjson.loads(encode_message(events))["v"] == MESSAGE_VERSION


@pytest.mark.parametrize("data", [
    b"not json", b"[]", b'{"v": 2, "events": []}', b'{"v": 1}', b'{"v": 1, "events": [{"x": 1}]}', b'{"v": 1, "events": [1]}',
])
def test_anything_else_is_undecodable(data):
    with pytest.raises(UndecodableMessage):
        decode_message(data)
