"""The ingest function through functions-framework's test client: every 4xx, exactly as Lago answers."""

from __future__ import annotations

import orjson
import pytest
from functions_framework import create_app

from meterline.ports import PublishFailed
from tests.support import REPO_ROOT

GOOD = {"transaction_id": "tx-1", "external_subscription_id": "sub-1", "code": "tokens_consumed",
        "timestamp": 1767225600, "properties": {"value": "120"}}
UNPROCESSABLE = {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors"}


@pytest.fixture
def client(runtime):
    return create_app("ingest", str(REPO_ROOT / "functions/ingest/main.py")).test_client()


def post(client, key, path, body, raw=None, headers=None):
    data = raw if raw is not None else orjson.dumps(body)
    hdrs = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    return client.post(path, data=data, headers=hdrs)


def ev(**changes):
    event = {**GOOD, **changes}
    return {k: v for k, v in event.items() if v is not ...}


CASES = [
    # (name, path, body or raw bytes, status, exact body)
    ("malformed json", "/api/v1/events", b'{"event": {', 400,
     {"status": 400, "error": "BadRequest: the body is not valid JSON", "code": "bad_request", "error_details": {"body": ["invalid_json"]}}),
    ("empty body", "/api/v1/events", b"", 400,
     {"status": 400, "error": "BadRequest: the body is not valid JSON", "code": "bad_request", "error_details": {"body": ["invalid_json"]}}),
    ("missing root key", "/api/v1/events", {"transaction_id": "x"}, 400,
     {"status": 400, "error": "BadRequest: param is missing or the value is empty: event", "code": "bad_request",
      "error_details": {"event": ["value_is_mandatory"]}}),
    ("json array body", "/api/v1/events", [GOOD], 400,
     {"status": 400, "error": "BadRequest: param is missing or the value is empty: event", "code": "bad_request",
      "error_details": {"event": ["value_is_mandatory"]}}),
    ("event not an object", "/api/v1/events", {"event": "x"}, 422, {**UNPROCESSABLE, "error_details": {"event": ["invalid_type"]}}),
    ("missing transaction_id", "/api/v1/events", {"event": ev(transaction_id=...)}, 422,
     {**UNPROCESSABLE, "error_details": {"transaction_id": ["value_is_mandatory"]}}),
    ("empty code", "/api/v1/events", {"event": ev(code="")}, 422, {**UNPROCESSABLE, "error_details": {"code": ["value_is_mandatory"]}}),
    ("missing subscription", "/api/v1/events", {"event": ev(external_subscription_id=None)}, 422,
     {**UNPROCESSABLE, "error_details": {"external_subscription_id": ["value_is_mandatory"]}}),
    ("transaction_id wrong type", "/api/v1/events", {"event": ev(transaction_id={"a": 1})}, 422,
     {**UNPROCESSABLE, "error_details": {"transaction_id": ["invalid_type"]}}),
    ("code wrong type", "/api/v1/events", {"event": ev(code=True)}, 422, {**UNPROCESSABLE, "error_details": {"code": ["invalid_type"]}}),
    ("transaction_id too long", "/api/v1/events", {"event": ev(transaction_id="x" * 256)}, 422,
     {**UNPROCESSABLE, "error_details": {"transaction_id": ["value_is_too_long"]}}),
    ("timestamp words", "/api/v1/events", {"event": ev(timestamp="yesterday")}, 422,
     {**UNPROCESSABLE, "error_details": {"timestamp": ["invalid_format"]}}),
    ("timestamp iso text", "/api/v1/events", {"event": ev(timestamp="2026-01-01T00:00:00Z")}, 422,
     {**UNPROCESSABLE, "error_details": {"timestamp": ["invalid_format"]}}),
    ("timestamp negative", "/api/v1/events", {"event": ev(timestamp=-5)}, 422,
     {**UNPROCESSABLE, "error_details": {"timestamp": ["invalid_format"]}}),
    ("timestamp past year 9999", "/api/v1/events", {"event": ev(timestamp=10**12)}, 422,
     {**UNPROCESSABLE, "error_details": {"timestamp": ["invalid_format"]}}),
    ("timestamp bool", "/api/v1/events", {"event": ev(timestamp=True)}, 422,
     {**UNPROCESSABLE, "error_details": {"timestamp": ["invalid_format"]}}),
    ("properties not an object", "/api/v1/events", {"event": ev(properties=[1, 2])}, 422,
     {**UNPROCESSABLE, "error_details": {"properties": ["invalid_type"]}}),
    ("amount not a number", "/api/v1/events", {"event": ev(precise_total_amount_cents="12,5")}, 422,
     {**UNPROCESSABLE, "error_details": {"precise_total_amount_cents": ["value_is_not_valid_number"]}}),
    ("several fields at once", "/api/v1/events", {"event": ev(code=..., timestamp="x")}, 422,
     {**UNPROCESSABLE, "error_details": {"code": ["value_is_mandatory"], "timestamp": ["invalid_format"]}}),
    ("batch missing root key", "/api/v1/events/batch", {"event": GOOD}, 400,
     {"status": 400, "error": "BadRequest: param is missing or the value is empty: events", "code": "bad_request",
      "error_details": {"events": ["value_is_mandatory"]}}),
    ("batch not a list", "/api/v1/events/batch", {"events": GOOD}, 422, {**UNPROCESSABLE, "error_details": {"events": ["invalid_type"]}}),
    ("empty batch", "/api/v1/events/batch", {"events": []}, 422, {**UNPROCESSABLE, "error_details": {"events": ["no_events"]}}),
    ("batch of 101", "/api/v1/events/batch", {"events": [ev(transaction_id=f"t{i}") for i in range(101)]}, 422,
     {**UNPROCESSABLE, "error_details": {"events": ["too_many_events"]}}),
    ("batch with one bad event", "/api/v1/events/batch",
     {"events": [GOOD, ev(transaction_id="t2", timestamp="bad"), ev(transaction_id="t3", code=...)]}, 422,
     {**UNPROCESSABLE, "error_details": {"1": {"timestamp": ["invalid_format"]}, "2": {"code": ["value_is_mandatory"]}}}),
    # The numeric domain and what can be stored at all (tests/embedded/test_numeric_domain.py has every edge).
    ("amount beyond the warehouse", "/api/v1/events", {"event": ev(precise_total_amount_cents="1" + "0" * 30)}, 422,
     {**UNPROCESSABLE, "error_details": {"precise_total_amount_cents": ["value_is_out_of_range"]}}),
    ("amount with ten places", "/api/v1/events", {"event": ev(precise_total_amount_cents="1.0000000005")}, 422,
     {**UNPROCESSABLE, "error_details": {"precise_total_amount_cents": ["value_is_too_precise"]}}),
    ("property int beyond 64 bits", "/api/v1/events", b'{"event": {"transaction_id": "t", "external_subscription_id": "s", '
     b'"code": "c", "properties": {"n": 18446744073709551616}}}', 422,
     {**UNPROCESSABLE, "error_details": {"properties": ["value_is_out_of_range"]}}),
    ("NaN is not JSON", "/api/v1/events", b'{"event": {"transaction_id": "t", "external_subscription_id": "s", '
     b'"code": "c", "properties": {"n": NaN}}}', 400,
     {"status": 400, "error": "BadRequest: the body is not valid JSON", "code": "bad_request", "error_details": {"body": ["invalid_json"]}}),
    ("transaction_id with a slash", "/api/v1/events", {"event": ev(transaction_id="a/b")}, 422,
     {**UNPROCESSABLE, "error_details": {"transaction_id": ["invalid_format"]}}),
    ("transaction_id with a newline", "/api/v1/events", {"event": ev(transaction_id="a\nb")}, 422,
     {**UNPROCESSABLE, "error_details": {"transaction_id": ["invalid_format"]}}),
    ("lone surrogate in a batch", "/api/v1/events/batch", b'{"events": [{"transaction_id": "t", "external_subscription_id": "s", '
     b'"code": "c"}, {"transaction_id": "t\\ud800", "external_subscription_id": "s", "code": "c"}]}', 422,
     {**UNPROCESSABLE, "error_details": {"1": {"transaction_id": ["invalid_format"]}}}),
]


@pytest.mark.parametrize("name,path,body,status,expected", CASES, ids=[c[0] for c in CASES])
def test_client_mistakes_get_exact_lago_bodies_and_publish_nothing(client, runtime, api_key, name, path, body, status, expected):
    raw = body if isinstance(body, bytes) else None
    resp = post(client, api_key, path, body, raw=raw)
    assert resp.status_code == status
    assert resp.get_json() == expected
    assert runtime.queue.depth() == 0  # all or nothing: a refused request publishes nothing


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong-key", "Basic dXNlcjpwYXNz", "Token ml_x"])
def test_missing_or_bad_api_key_is_401(client, runtime, api_key, header):
    headers = {} if header is None else {"Authorization": header}
    resp = client.post("/api/v1/events", data=orjson.dumps({"event": GOOD}), headers=headers)
    assert resp.status_code == 401
    assert resp.get_json() == {"status": 401, "error": "Unauthorized"}
    assert runtime.queue.depth() == 0


def test_authentication_comes_before_body_parsing(client, runtime):
    resp = client.post("/api/v1/events", data=b"{not json", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401


def test_oversized_body_is_413(client, runtime, api_key):
    limit = runtime.settings.max_body_bytes
    big = {"event": ev(properties={"value": "1", "pad": "x" * limit})}
    resp = post(client, api_key, "/api/v1/events", big)
    assert resp.status_code == 413
    assert resp.get_json()["code"] == "payload_too_large"
    assert resp.get_json()["error_details"] == {"body": ["too_large"]}
    assert runtime.queue.depth() == 0


def test_wrong_method_and_unknown_route(client, runtime, api_key):
    assert client.delete("/api/v1/events", headers={"Authorization": f"Bearer {api_key}"}).status_code == 405
    assert post(client, api_key, "/api/v1/events/estimate_fees", {"event": GOOD}).status_code == 405
    assert client.get("/api/v1/plans", headers={"Authorization": f"Bearer {api_key}"}).status_code == 404


def test_single_event_success_body_is_lagos(client, runtime, api_key):
    resp = post(client, api_key, "/api/v1/events", {"event": ev(timestamp="1767225600.123", properties={"value": 1.25})})
    assert resp.status_code == 200
    event = resp.get_json()["event"]
    assert set(event) == {"lago_id", "transaction_id", "lago_customer_id", "code", "timestamp",
                          "precise_total_amount_cents", "properties", "lago_subscription_id",
                          "external_subscription_id", "created_at"}
    assert event["timestamp"] == "2026-01-01T00:00:00.123Z"
    assert event["properties"] == {"value": "1.25"}  # exact decimal text, never a float
    assert event["transaction_id"] == "tx-1" and event["external_subscription_id"] == "sub-1"
    assert runtime.queue.depth() == 1


def test_nested_fractional_properties_are_accepted_and_kept_exact(client, runtime, api_key):
    # They once reached the JSON encoder as Decimals: a 500 for a valid event.
    raw = (b'{"events": [{"transaction_id": "n-1", "external_subscription_id": "sub-1", "code": "tokens_consumed", '
           b'"properties": {"value": 2, "usage": {"ratio": 0.10, "steps": [1.5, 2]}}}]}')
    resp = post(client, api_key, "/api/v1/events/batch", None, raw=raw)
    assert resp.status_code == 200, resp.get_data()
    assert resp.get_json()["events"][0]["properties"] == {"value": 2, "usage": {"ratio": "0.10", "steps": ["1.5", 2]}}
    assert runtime.queue.depth() == 1


def test_retry_answers_200_with_the_same_lago_id(client, runtime, api_key):
    first = post(client, api_key, "/api/v1/events", {"event": GOOD})
    again = post(client, api_key, "/api/v1/events", {"event": GOOD})
    assert first.status_code == again.status_code == 200
    assert first.get_json()["event"]["lago_id"] == again.get_json()["event"]["lago_id"]


def test_batch_packs_all_events_into_one_message(client, runtime, api_key):
    resp = post(client, api_key, "/api/v1/events/batch", {"events": [ev(transaction_id=f"t{i}") for i in range(100)]})
    assert resp.status_code == 200
    assert len(resp.get_json()["events"]) == 100
    assert runtime.queue.depth() == 1


def test_publish_failure_is_503_and_nothing_is_accepted(client, runtime, api_key, monkeypatch):
    def refuse(data, attributes):
        raise PublishFailed("bus down")

    monkeypatch.setattr(runtime.adapters.bus, "publish", refuse)
    resp = post(client, api_key, "/api/v1/events/batch", {"events": [GOOD]})
    assert resp.status_code == 503
    assert resp.get_json() == {"status": 503, "error": "Service Unavailable", "code": "service_unavailable"}


def test_numeric_property_checked_against_the_metric(tmp_path):
    from meterline.core.errors import ValidationFailed
    from meterline.core.events import parse_single

    lookup = {"tokens_consumed": "value"}.get
    with pytest.raises(ValidationFailed) as failure:
        parse_single({"event": ev(properties={"value": "12 tokens"})}, 0, lookup)
    assert failure.value.details == {"properties": ["value_is_not_valid_number"]}
    assert parse_single({"event": ev(properties={"value": "-12.50"})}, 0, lookup).properties == {"value": "-12.50"}


NOT_UTF8 = {"status": 400, "error": "BadRequest: the body is not UTF-8 JSON", "code": "bad_request",
            "error_details": {"body": ["invalid_encoding"]}}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize(("path", "text"), [
    ("/api/v1/events", '{"event": {"transaction_id": "t\ud800", "external_subscription_id": "s", "code": "c"}}'),
    ("/api/v1/events", '{"event": {"transaction_id": "t", "external_subscription_id": "s", "code": "c"}}'),
    ("/api/v1/events/batch", '{"events": [{"transaction_id": "t", "external_subscription_id": "s\udfff", "code": "c"}]}'),
    ("/api/v1/customers", '{"customer": {"external_id": "c\ud800", "name": "n"}}'),
])
def test_a_body_that_is_not_utf8_is_refused_whole(runtime, api_key, encoding, path, text):
    # The stdlib would guess UTF-16/32 and let a lone surrogate through to the stores (a 500).
    from meterline.local.app import create_app as serve_app

    resp = post(serve_app(runtime).test_client(), api_key, path, None, raw=text.encode(encoding, "surrogatepass"))
    assert (resp.status_code, resp.get_json()) == (400, NOT_UTF8)
    assert runtime.queue.depth() == 0
