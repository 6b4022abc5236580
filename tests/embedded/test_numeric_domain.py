"""The numeric domain (`meterline.core.numbers`) at each of its edges, through the real ingest
function: what is accepted is stored and counted exactly; everything else is a 4xx naming the
field, never a 500, never a 200 that is lost later."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

import duckdb
import orjson
import pytest
from functions_framework import create_app
from hypothesis import example, given
from hypothesis import strategies as st

from meterline.adapters.sql import literal, to_duckdb
from meterline.core.numbers import STORED_NUMBER_SQL_PATTERN, decimal_text, number_error
from meterline.local.worker import drain_once
from tests.support import REPO_ROOT

MAX = "999999999999999999.999999999"  # the largest number of the domain
UNPROCESSABLE = {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors"}
BAD_JSON = {"status": 400, "error": "BadRequest: the body is not valid JSON", "code": "bad_request",
            "error_details": {"body": ["invalid_json"]}}


# -- the domain itself ------------------------------------------------------------------------

@pytest.mark.parametrize("value,quantity,price", [
    ("0", None, None),
    (MAX, None, None),
    ("-" + MAX, None, None),
    ("1000000000000000000", "value_is_out_of_range", "value_is_out_of_range"),
    ("99999999999999999999999999999", "value_is_out_of_range", "value_is_out_of_range"),
    ("0.000000001", None, None),
    ("0.0000000001", "value_is_too_precise", None),
    ("1.0000000005", "value_is_too_precise", None),
    ("1.0000000000", None, None),  # ten places, but only zeros past the ninth
    ("000000000000000000000000001", None, None),  # leading zeros are no digits
    (10**18 - 1, None, None),
    (10**18, "value_is_out_of_range", "value_is_out_of_range"),
    (-(10**18), "value_is_out_of_range", "value_is_out_of_range"),
    (2**64, "value_is_out_of_range", "value_is_out_of_range"),
    (Decimal("1E+400"), "value_is_out_of_range", "value_is_out_of_range"),
    (Decimal("1E-10"), "value_is_too_precise", None),
    (Decimal("1E+5"), None, None),
    (Decimal("0E+400"), None, None),
    (Decimal("NaN"), "value_is_not_valid_number", "value_is_not_valid_number"),
    (Decimal("Infinity"), "value_is_not_valid_number", "value_is_not_valid_number"),
    ("1e5", "value_is_not_valid_number", "value_is_not_valid_number"),  # Lago's text has no exponent
    ("١٢", "value_is_not_valid_number", "value_is_not_valid_number"),  # Arabic-Indic digits: no warehouse reads them
    ("12 tokens", "value_is_not_valid_number", "value_is_not_valid_number"),
    (True, "value_is_not_valid_number", "value_is_not_valid_number"),
    (1.5, "value_is_not_valid_number", "value_is_not_valid_number"),
    (None, "value_is_not_valid_number", "value_is_not_valid_number"),
])
def test_number_error_at_each_edge(value, quantity, price):
    assert number_error(value) == quantity
    assert number_error(value, None) == price


DECIMALS = st.decimals(allow_nan=False, allow_infinity=False) | st.builds(
    lambda digits, exponent: Decimal(f"{digits}E{exponent}"), st.integers(-(10**30), 10**30), st.integers(-40, 40))


@given(DECIMALS)
@example(Decimal("999999999999999999.999999999"))
@example(Decimal("1000000000000000000"))
@example(Decimal("0E-12"))
@example(Decimal("1.00000000000000000000E-7"))
def test_a_decimal_is_stored_as_text_the_domain_judges_alike(value):
    # Ingest checks a metric's Decimal on its stored text first (events.validate_event).
    text = decimal_text(value)
    assert Decimal(text) == value
    assert (number_error(text) is None) == (number_error(value) is None)


NUMERIC_TEXT = st.from_regex(r"\A-?0{0,3}[0-9]{1,21}(\.[0-9]{1,12})?\Z")


@given(st.lists(NUMERIC_TEXT | st.text(max_size=6), min_size=1, max_size=30))
@example([MAX, "1000000000000000000", "0.0000000001", "1.0000000000", "-0", "1e5", "\n1", "1\n"])
def test_the_usage_sql_reads_exactly_the_numbers_of_the_domain(texts):
    # The usage query's guard (adapters/sql/usage.py), on DuckDB; bqemulator runs it in the
    # contract tests. A value of the domain is read exactly, any other as no number at all.
    sql = to_duckdb(f"SELECT SAFE_CAST(IF(REGEXP_CONTAINS(v, {literal(STORED_NUMBER_SQL_PATTERN)}), v, NULL) "
                    "AS NUMERIC(38, 9)) AS n FROM UNNEST(@texts) AS v WITH OFFSET AS i ORDER BY i")
    read = [row[0] for row in duckdb.execute(sql.replace("@texts", "$texts"), {"texts": texts}).fetchall()]
    expected = [Decimal(t) if number_error(t) is None else None for t in texts]
    assert read == expected


# -- through the ingest function --------------------------------------------------------------

@pytest.fixture
def client(runtime):
    # "tokens" is a sum metric on "value": ingest checks that property against the domain.
    runtime.admin.service.create_billable_metric(
        {"code": "tokens", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "value"})
    return create_app("ingest", str(REPO_ROOT / "functions/ingest/main.py")).test_client()


def post(client, key, body: bytes, path="/api/v1/events"):
    return client.post(path, data=body, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})


def event(tx: str, fields: str = "", code: str = "tokens", sub: str = "sub-1") -> bytes:
    """A single-event body; ids and fields are raw JSON text (so NaN, 1e400, \\ud800 go through as sent)."""
    more = f", {fields}" if fields else ""
    return (f'{{"event": {{"transaction_id": "{tx}", "external_subscription_id": "{sub}", "code": "{code}", '
            f'"timestamp": 1767225600{more}}}}}').encode()


def nested(levels: int) -> str:
    """JSON text of `levels` objects one in another."""
    return '{"a": ' * levels + "1" + "}" * levels


def refused(details):
    return {**UNPROCESSABLE, "error_details": details}


PROPERTIES = "properties"
AMOUNT = "precise_total_amount_cents"
REFUSED = [
    # (name, fields, error_details or the 400 body)
    ("29 nines", '"properties": {"value": "99999999999999999999999999999"}', {PROPERTIES: ["value_is_out_of_range"]}),
    ("one past the max", '"properties": {"value": "1000000000000000000"}', {PROPERTIES: ["value_is_out_of_range"]}),
    ("json int one past the max", '"properties": {"value": 1000000000000000000}', {PROPERTIES: ["value_is_out_of_range"]}),
    ("ten places", '"properties": {"value": "0.0000000001"}', {PROPERTIES: ["value_is_too_precise"]}),
    ("1e400", '"properties": {"value": 1e400}', {PROPERTIES: ["value_is_out_of_range"]}),
    ("1E-10", '"properties": {"value": 1E-10}', {PROPERTIES: ["value_is_too_precise"]}),
    ("exponent text", '"properties": {"value": "1e5"}', {PROPERTIES: ["value_is_not_valid_number"]}),
    ("amount of 31 digits", '"precise_total_amount_cents": "1000000000000000000000000000000"', {AMOUNT: ["value_is_out_of_range"]}),
    ("amount 1e400", '"precise_total_amount_cents": 1e400', {AMOUNT: ["value_is_out_of_range"]}),
    ("amount ten places", '"precise_total_amount_cents": "1.0000000005"', {AMOUNT: ["value_is_too_precise"]}),
    ("amount 1E-10", '"precise_total_amount_cents": 1E-10', {AMOUNT: ["value_is_too_precise"]}),
    # Any property, at any depth: what orjson and the warehouse cannot hold.
    ("int of 65 bits", '"properties": {"id": 18446744073709551616}', {PROPERTIES: ["value_is_out_of_range"]}),
    ("int of 64 unsigned bits", '"properties": {"id": 9223372036854775808}', {PROPERTIES: ["value_is_out_of_range"]}),
    ("nested int of 65 bits", '"properties": {"m": [1, {"id": 18446744073709551616}]}', {PROPERTIES: ["value_is_out_of_range"]}),
    ("33 levels", f'"properties": {nested(33)}', {PROPERTIES: ["value_is_too_deep"]}),
    ("254 levels", f'"properties": {nested(254)}', {PROPERTIES: ["value_is_too_deep"]}),
    ("1000 levels", f'"properties": {nested(1000)}', {PROPERTIES: ["value_is_too_deep"]}),
    # Lone surrogates: well-formed JSON, but no encoder writes them back.
    ("surrogate in a property value", '"properties": {"model": "gpt\\ud800"}', {PROPERTIES: ["invalid_format"]}),
    ("surrogate in a property key", '"properties": {"k\\udfff": 1}', {PROPERTIES: ["invalid_format"]}),
    ("surrogate in an unknown field", '"extra": "\\ud800"', {"event": ["invalid_format"]}),
]
NOT_JSON = [
    ("NaN property", '"properties": {"value": NaN}'),
    ("Infinity property", '"properties": {"x": {"y": Infinity}}'),
    ("-Infinity timestamp", '"timestamp": -Infinity'),
    ("NaN amount", '"precise_total_amount_cents": NaN'),
    ("1100 levels", f'"properties": {nested(1100)}'),  # beyond every JSON reader's depth
]
BAD_IDS = [
    ("transaction_id", "t\\ud800", {"transaction_id": ["invalid_format"]}),
    ("transaction_id", "a/b", {"transaction_id": ["invalid_format"]}),
    ("transaction_id", "a\\nb", {"transaction_id": ["invalid_format"]}),
    ("transaction_id", "a\\u0000b", {"transaction_id": ["invalid_format"]}),
    ("transaction_id", "a\\u0085b", {"transaction_id": ["invalid_format"]}),
    ("code", "c\\udc00", {"code": ["invalid_format"]}),
    ("code", "c\\td", {"code": ["invalid_format"]}),
    ("external_subscription_id", "s\\ud800", {"external_subscription_id": ["invalid_format"]}),
    ("external_subscription_id", "s\\u0000", {"external_subscription_id": ["invalid_format"]}),
]


@pytest.mark.parametrize("name,fields,details", REFUSED, ids=[c[0] for c in REFUSED])
def test_outside_the_domain_is_422_naming_the_field(client, runtime, api_key, name, fields, details):
    resp = post(client, api_key, event("t1", fields))
    assert (resp.status_code, resp.get_json()) == (422, refused(details))
    assert runtime.queue.depth() == 0


@pytest.mark.parametrize("name,fields", NOT_JSON, ids=[c[0] for c in NOT_JSON])
def test_what_is_not_json_is_400(client, runtime, api_key, name, fields):
    resp = post(client, api_key, event("t1", fields))
    assert (resp.status_code, resp.get_json()) == (400, BAD_JSON)


@pytest.mark.parametrize("field,text,details", BAD_IDS, ids=[f"{c[0]}:{c[1]}" for c in BAD_IDS])
def test_ids_that_cannot_be_stored_or_fetched_are_422(client, runtime, api_key, field, text, details):
    ids = {"tx": "t1", "code": "tokens", "sub": "sub-1"}
    ids[{"transaction_id": "tx", "code": "code", "external_subscription_id": "sub"}[field]] = text
    resp = post(client, api_key, event(ids["tx"], code=ids["code"], sub=ids["sub"]))
    assert (resp.status_code, resp.get_json()) == (422, refused(details))
    assert runtime.queue.depth() == 0


@pytest.mark.parametrize("tx", ["t\u00a0nbsp", "ünïcødé", r"emoji\ud83d\ude00", "a b", "x';--", "%2F", "?#&="])
def test_every_other_printable_id_is_accepted_and_fetchable(client, runtime, api_key, tx):
    resp = post(client, api_key, event(tx, '"properties": {"value": 2}'))
    assert resp.status_code == 200, resp.get_data()
    drain_once(runtime.queue, runtime.process.service)
    stored = resp.get_json()["event"]["transaction_id"]
    got = client.get(f"/api/v1/events/{quote(stored, safe='')}?external_subscription_id=sub-1",
                     headers={"Authorization": f"Bearer {api_key}"})
    assert got.status_code == 200 and got.get_json()["event"]["transaction_id"] == stored


def test_in_a_batch_the_whole_batch_is_refused_keyed_by_index(client, runtime, api_key):
    good = event("b0").decode()[len('{"event": '):-1]
    bad_amount = event("b1", '"precise_total_amount_cents": "1.0000000005"').decode()[len('{"event": '):-1]
    resp = post(client, api_key, f'{{"events": [{good}, {bad_amount}]}}'.encode(), "/api/v1/events/batch")
    assert (resp.status_code, resp.get_json()) == (422, refused({"1": {AMOUNT: ["value_is_too_precise"]}}))
    surrogate = event("b2", code="tok\\ud800").decode()[len('{"event": '):-1]
    resp = post(client, api_key, f'{{"events": [{good}, {good}, {surrogate}]}}'.encode(), "/api/v1/events/batch")
    assert (resp.status_code, resp.get_json()) == (422, refused({"2": {"code": ["invalid_format"]}}))
    assert runtime.queue.depth() == 0


ACCEPTED = [
    # (name, fields, the stored value of "value" or None, the stored amount or None)
    ("the max", f'"properties": {{"value": "{MAX}"}}', MAX, None),
    ("minus the max", f'"properties": {{"value": "-{MAX}"}}', "-" + MAX, None),
    ("the max as a json number", f'"properties": {{"value": {MAX}}}', MAX, None),
    ("json int just below the max", '"properties": {"value": 999999999999999999}', 999999999999999999, None),
    ("nine places", '"properties": {"value": "0.000000001"}', "0.000000001", None),
    ("trailing zeros past nine places", '"properties": {"value": "1.0000000000"}', "1.0000000000", None),
    ("1e5 as a json number", '"properties": {"value": 1e5}', "100000", None),
    ("1E-9 as a json number", '"properties": {"value": 1E-9}', "0.000000001", None),
    ("amount at the max", f'"precise_total_amount_cents": "{MAX}"', None, MAX),
    ("amount with nine places", '"precise_total_amount_cents": "1.000000001"', None, "1.000000001"),
    ("amount 1e2", '"precise_total_amount_cents": 1e2', None, "100"),
    # Not read by a metric: stored exactly, whatever its precision; ints up to 64 bits.
    ("a 64-bit id elsewhere", '"properties": {"value": 1, "id": 9223372036854775807}', 1, None),
    ("many places elsewhere", '"properties": {"value": 1, "latency": 0.30000000000000004}', 1, None),
    ("32 levels", f'"properties": {{"value": 1, "n": {nested(31)}}}', 1, None),
    ("a surrogate pair", '"properties": {"value": 1, "emoji": "\\ud83d\\ude00"}', 1, None),
]


@pytest.mark.parametrize("name,fields,value,amount", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_inside_the_domain_is_stored_and_counted_exactly(client, runtime, api_key, name, fields, value, amount):
    resp = post(client, api_key, event("t1", fields))
    assert resp.status_code == 200, resp.get_data()
    answered = resp.get_json()["event"]
    assert answered["properties"].get("value") == value
    drain_once(runtime.queue, runtime.process.service)
    got = client.get("/api/v1/events/t1?external_subscription_id=sub-1", headers={"Authorization": f"Bearer {api_key}"})
    assert got.status_code == 200
    stored = got.get_json()["event"]
    assert stored["properties"] == answered["properties"]
    if amount is not None:
        assert Decimal(stored[AMOUNT]) == Decimal(amount) == Decimal(answered[AMOUNT])
    (total,) = runtime.adapters.warehouse.totals("tokens", "value")
    assert total.total == (Decimal(value) if value is not None else 0)


def test_many_events_at_the_max_sum_exactly(client, runtime, api_key):
    events = [orjson.loads(event(f"m{i}", f'"properties": {{"value": "{MAX}"}}'))["event"] for i in range(100)]
    for _sign, batch in (("", events), ("-", [{**e, "transaction_id": "n" + e["transaction_id"],
                                             "properties": {"value": "-" + MAX}} for e in events[:40]])):
        resp = post(client, api_key, orjson.dumps({"events": batch}), "/api/v1/events/batch")
        assert resp.status_code == 200
    drain_once(runtime.queue, runtime.process.service)
    (total,) = runtime.adapters.warehouse.totals("tokens", "value")
    assert (total.events, total.total) == (140, Decimal(MAX) * 60)
