"""The usage SQL, written once in BigQuery's dialect: same events, same units on bqemulator and DuckDB."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, localcontext

import orjson
import pytest
import sqlglot
from sqlglot import exp

from meterline.adapters import sql
from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse
from meterline.adapters.sql import usage
from meterline.core.catalog import BillableMetric, Plan
from meterline.core.events import parse_batch_body
from meterline.core.pricing.usage import ChargeUsage, SeatEvent
from meterline.core.usage_query import UsageQuery, UsageWindow
from meterline.services.usage import read_usage
from tests.harness.backends import embedded_backend, gcp_backend

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
T0 = int(JAN.timestamp())
T_FEB = int(FEB.timestamp())
DAY = 86_400

METRICS = {m["code"]: BillableMetric.model_validate(m) for m in [
    {"code": "tokens", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "value"},
    {"code": "calls", "name": "Calls", "aggregation_type": "count_agg"},
    {"code": "peak", "name": "Peak", "aggregation_type": "max_agg", "field_name": "value"},
    {"code": "users", "name": "Users", "aggregation_type": "unique_count_agg", "field_name": "user_id"},
    {"code": "storage", "name": "Storage", "aggregation_type": "latest_agg", "field_name": "gb",
     "rounding_function": "ceil", "rounding_precision": 0},
    {"code": "seats", "name": "Seats", "aggregation_type": "unique_count_agg", "field_name": "user_id", "recurring": True},
    {"code": "spend", "name": "Spend", "aggregation_type": "sum_agg", "field_name": "amount"},
    {"code": "gb", "name": "GB stored", "aggregation_type": "weighted_sum_agg", "field_name": "delta", "recurring": True},
]}
PLAN = Plan.model_validate({
    "code": "hybrid", "name": "Hybrid", "interval": "monthly", "amount_cents": 0, "amount_currency": "USD",
    "charges": [
        {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.001"},
         "filters": [
             {"values": {"model": ["gpt-4"]}, "properties": {"amount": "0.01"}},
             {"values": {"model": ["gpt-4"], "token_type": ["output"]}, "properties": {"amount": "0.03"}},
         ]},
        {"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "1"}},
        {"billable_metric_code": "peak", "charge_model": "standard", "properties": {"amount": "1"}},
        {"billable_metric_code": "users", "charge_model": "standard", "properties": {"amount": "1"}},
        {"billable_metric_code": "storage", "charge_model": "standard", "properties": {"amount": "1"}},
        {"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "10"}, "prorated": True},
        {"billable_metric_code": "gb", "charge_model": "standard", "properties": {"amount": "0.1"}},
        {"billable_metric_code": "spend", "charge_model": "percentage",
         "properties": {"rate": "1", "per_transaction_min_amount": "0.5"}},
    ],
})


def ev(tx, sub, code, at, **props):
    return {"transaction_id": tx, "external_subscription_id": sub, "code": code, "timestamp": at, "properties": props}


EVENTS = [
    # sub-a, January
    ev("a1", "sub-a", "tokens", T0 + 10, value="100.5", model="gpt-4", token_type="input"),
    ev("a2", "sub-a", "tokens", T0 + 20, value=200, model="gpt-4", token_type="output"),
    ev("a3", "sub-a", "tokens", T0 + 30, value="0.000000001", model="llama"),
    ev("a4", "sub-a", "calls", T0 + 40),
    ev("a5", "sub-a", "calls", T0 + 50),
    ev("a6", "sub-a", "peak", T0 + 60, value="7"),
    ev("a7", "sub-a", "peak", T0 + 70, value="3"),
    ev("a8", "sub-a", "users", T0 + 80, user_id="u1"),
    ev("a9", "sub-a", "users", T0 + 90, user_id="u1"),
    ev("a10", "sub-a", "users", T0 + 95, user_id="u2"),
    ev("a11", "sub-a", "storage", T0 + 100, gb="4.2"),
    ev("a12", "sub-a", "storage", T0 + 200, gb="2.1"),  # latest wins, then ceil -> 3
    ev("a13", "sub-a", "seats", T0 - 86_400 * 40, user_id="alice", operation_type="add"),  # before the period: carried over
    ev("a14", "sub-a", "seats", T0 + 86_400 * 15, user_id="bob", operation_type="add"),
    ev("a15", "sub-a", "seats", T0 + 86_400 * 20, user_id="alice", operation_type="remove"),
    ev("a16", "sub-a", "spend", T0 + 300, amount="10"),
    ev("a17", "sub-a", "spend", T0 + 400, amount="20.25"),
    # GB stored: 10 before January, +20 on Jan 11, -15 on Jan 21 -> (10x10 + 30x10 + 15x11) / 31 days
    ev("g1", "sub-a", "gb", T0 - 5 * 86_400, delta="10"),
    ev("g2", "sub-a", "gb", T0 + 10 * 86_400, delta=20),
    ev("g3", "sub-a", "gb", T0 + 20 * 86_400, delta="-15"),
    ev("g4", "sub-a", "gb", int(FEB.timestamp()) + 5, delta="1000"),  # after the window
    # outside the window: February, and another subscription's events
    ev("a18", "sub-a", "tokens", int(FEB.timestamp()), value="999", model="gpt-4"),
    ev("b1", "sub-b", "tokens", T0 + 5, value="5", model="llama"),
    ev("b2", "sub-b", "calls", T0 + 6),
    ev("c1", "sub-c", "tokens", T0 + 5, value="1"),  # sub-c has no window
]
WINDOWS = [
    UsageWindow("w-a", "sub-a", "hybrid", JAN, FEB),
    UsageWindow("w-b", "sub-b", "hybrid", JAN, FEB),
    UsageWindow("w-empty", "sub-z", "hybrid", JAN, FEB),
]


def _div(a: Decimal, b: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 38
        return a / b


def ts(seconds):
    return datetime.fromtimestamp(seconds, tz=UTC)


EXPECTED = {
    "w-a": {
        ("tokens", "model=gpt-4"): ChargeUsage(units=Decimal("100.5"), events_count=1),
        ("tokens", "model=gpt-4;token_type=output"): ChargeUsage(units=Decimal("200"), events_count=1),
        ("tokens", None): ChargeUsage(units=Decimal("0.000000001"), events_count=1),
        ("calls", None): ChargeUsage(units=Decimal(2), events_count=2),
        ("peak", None): ChargeUsage(units=Decimal(7), events_count=2),
        ("users", None): ChargeUsage(units=Decimal(2), events_count=3),
        ("storage", None): ChargeUsage(units=Decimal(3), events_count=2),
        ("seats", None): ChargeUsage(seat_events=(
            SeatEvent("alice", "add", ts(T0 - 86_400 * 40)),
            SeatEvent("bob", "add", ts(T0 + 86_400 * 15)),
            SeatEvent("alice", "remove", ts(T0 + 86_400 * 20)),
        )),
        ("spend", None): ChargeUsage(units=Decimal("30.25"), events_count=2, event_values=(Decimal(10), Decimal("20.25"))),
        ("gb", None): ChargeUsage(units=_div(Decimal(565), Decimal(31)), events_count=2),
    },
    "w-b": {
        ("tokens", None): ChargeUsage(units=Decimal(5), events_count=1),
        ("calls", None): ChargeUsage(units=Decimal(1), events_count=1),
    },
    "w-empty": {},
}


def load(warehouse):
    events = parse_batch_body(orjson.dumps({"events": EVENTS[:50]}), T0 * 1_000_000)
    warehouse.insert_events(events, T0 * 1_000_000)
    warehouse.insert_events(events[:3], T0 * 1_000_000 + 1)  # duplicates the view must remove


def usage_on(warehouse):
    load(warehouse)
    return read_usage(warehouse, UsageQuery(METRICS, [PLAN]), WINDOWS)


def test_usage_on_duckdb_is_exact(tmp_path):
    assert usage_on(embedded_backend(tmp_path).warehouse) == EXPECTED


@pytest.mark.servers
def test_bigquery_and_duckdb_give_identical_usage(tmp_path, request, monkeypatch):
    duck = usage_on(embedded_backend(tmp_path).warehouse)
    bq = usage_on(gcp_backend(request, monkeypatch).warehouse)
    assert bq == duck == EXPECTED


def test_one_query_serves_thousands_of_windows(tmp_path):
    warehouse = embedded_backend(tmp_path).warehouse
    load(warehouse)
    query = UsageQuery(METRICS, [PLAN])
    many = [UsageWindow(f"w{i}", f"sub-{i}", "hybrid", JAN, FEB) for i in range(5000)] + WINDOWS[:1]
    calls = []
    original = warehouse._execute  # every DuckDB statement goes through it

    def counting(text, params=None):
        calls.append(text)
        return original(text, params)

    warehouse._execute = counting
    result = read_usage(warehouse, query, many)
    # One usage statement for 5,001 windows, after the two-column check for copies.
    assert len(calls) == 2 and "has_copies" in calls[0] and "windows" in calls[1]
    assert result["w-a"] == EXPECTED["w-a"]
    assert result["w0"] == {}


# Events the windows must not count, around EVENTS.
OUTSIDE = [
    ev("x1", "sub-a", "calls", f"{T0 - 1}.999999"),  # one microsecond before the window
    ev("x2", "sub-a", "calls", T_FEB),  # at the window's end, which is excluded
    ev("x3", "sub-a", "tokens", T0 - 40 * DAY, value="7", model="llama"),  # not carried over: not recurring
    ev("x4", "sub-a", "seats", int(MAR.timestamp()) + 10 * DAY, user_id="carol", operation_type="add"),  # after
    ev("x5", "sub-b", "peak", int(MAR.timestamp()) + 10 * DAY, value="99"),  # after the scan's upper bound
]


def load_with_noise(warehouse):
    """EVENTS and OUTSIDE, then every one of them again, as a redelivery within the claim's window leaves them."""
    events = parse_batch_body(orjson.dumps({"events": EVENTS + OUTSIDE}), T0 * 1_000_000)
    warehouse.insert_events(events, T0 * 1_000_000)
    warehouse.insert_events(events, T0 * 1_000_000 + 1)
    warehouse.insert_events(events[:3], T0 * 1_000_000 + 2)


def test_duplicates_and_events_outside_the_windows_change_nothing(backend):
    load_with_noise(backend.warehouse)
    # The seat added 40 days before January (a13) still counts: seats carry over.
    assert read_usage(backend.warehouse, UsageQuery(METRICS, [PLAN]), WINDOWS) == EXPECTED


def test_duckdb_ranks_copies_away_only_when_there_are_copies(tmp_path):
    """The DuckDB warehouse leaves the ranking out when `events` holds no copy: both ways exact."""
    warehouse = embedded_backend(tmp_path).warehouse
    statements = []
    original = warehouse._execute

    def recording(text, params=None):
        statements.append(text)
        return original(text, params)

    warehouse._execute = recording
    events = parse_batch_body(orjson.dumps({"events": EVENTS[:50]}), T0 * 1_000_000)
    warehouse.insert_events(events, T0 * 1_000_000)
    assert read_usage(warehouse, UsageQuery(METRICS, [PLAN]), WINDOWS) == EXPECTED
    assert "ROW_NUMBER" not in statements[-1]
    warehouse.insert_events(events[:3], T0 * 1_000_000 + 1)  # copies
    assert read_usage(warehouse, UsageQuery(METRICS, [PLAN]), WINDOWS) == EXPECTED
    assert "ROW_NUMBER" in statements[-1]


def test_a_retry_received_after_midnight_is_billed_in_one_period_only(backend):
    # No timestamp: each copy gets its time of receipt, which the payload hash leaves out, so a
    # retry racing the first attempt is a second row with a later timestamp. events_deduped
    # keeps the first processed copy (in January); February's run must not count the other.
    body = orjson.dumps({"events": [{"transaction_id": "late", "external_subscription_id": "sub-r", "code": "calls"}]})
    first = parse_batch_body(body, T_FEB * 1_000_000 - 500_000)
    retry = parse_batch_body(body, T_FEB * 1_000_000 + 500_000)
    backend.warehouse.insert_events(first, T_FEB * 1_000_000)
    backend.warehouse.insert_events(retry, T_FEB * 1_000_000 + 1)
    query = UsageQuery(METRICS, [PLAN])
    january = read_usage(backend.warehouse, query, [UsageWindow("jan", "sub-r", "hybrid", JAN, FEB)])
    february = read_usage(backend.warehouse, query, [UsageWindow("feb", "sub-r", "hybrid", FEB, MAR)])
    assert january == {"jan": {("calls", None): ChargeUsage(units=Decimal(1), events_count=1)}}
    assert february == {"feb": {}}
    assert backend.warehouse.get_event("sub-r", "late") == first[0]


def _bounds(where: exp.Expression) -> set[str]:
    """Which bounds a WHERE puts on the `timestamp` column: ">=" and/or "<"."""
    ops = {exp.GTE: ">=", exp.LT: "<"}
    return {ops[type(c)] for c in where.find_all(exp.GTE, exp.LT) if c.this == exp.column("timestamp")}


def test_the_period_filter_reaches_events_before_dedup():
    # Deduplicating first (events_deduped) and filtering after would scan every partition:
    # BigQuery cannot push a filter below a window function. Each ROW_NUMBER must rank the
    # rows of one scan of `events` whose own WHERE already cut them to the period.
    tree = sqlglot.parse_one(usage.statement(UsageQuery(METRICS, [PLAN])), read="bigquery")
    assert "events_deduped" not in {t.name for t in tree.find_all(exp.Table)}
    (view_rank,) = sqlglot.parse_one(sql.view_query("events_deduped", str), read="bigquery").find_all(exp.Window)
    branches = {}
    for rank in tree.find_all(exp.Window):
        assert isinstance(rank.this, exp.RowNumber)
        # The same rule as the view: the same copy of a key wins.
        assert rank.args["partition_by"] == view_rank.args["partition_by"] and rank.args["order"] == view_rank.args["order"]
        ranked = rank.find_ancestor(exp.Select)
        # What it ranks is the scan itself (which only extracts properties): no join and no
        # filter between the scan's WHERE and the ranking.
        assert not ranked.args.get("joins") and not ranked.args.get("where")
        subquery = ranked.args["from_"].this
        assert isinstance(subquery, exp.Subquery)
        scan = subquery.this
        assert scan.args["from_"].this == exp.table_("events") and not scan.args.get("joins")
        (codes,) = [c for c in scan.args["where"].find_all(exp.In) if c.this == exp.column("code")]
        branches[frozenset(v.name for v in codes.expressions)] = _bounds(scan.args["where"])
    recurring = frozenset(code for code, m in METRICS.items() if m.recurring)
    assert branches == {frozenset(METRICS) - recurring: {">=", "<"}, recurring: {"<"}}


def test_each_property_is_parsed_once_per_scanned_row():
    # JSON_VALUE parses the whole properties text on each call: the scans extract each property
    # a branch reads once, and nothing else in the statement reads `properties`.
    tree = sqlglot.parse_one(usage.statement(UsageQuery(METRICS, [PLAN])), read="bigquery")
    extractions = [c.parent for c in tree.find_all(exp.Column) if c.name == "properties"]
    assert extractions and all(isinstance(e, exp.JSONExtractScalar) for e in extractions)  # JSON_VALUE
    paths = {}  # the properties each scan extracts, by the codes it scans
    for e in extractions:
        scan = e.find_ancestor(exp.Select)
        assert scan.args["from_"].this == exp.table_("events")
        (codes,) = [c for c in scan.args["where"].find_all(exp.In) if c.this == exp.column("code")]
        paths.setdefault(frozenset(v.name for v in codes.expressions), []).append(e.expression.sql(dialect="bigquery"))
    recurring = frozenset(code for code, m in METRICS.items() if m.recurring)
    assert paths == {
        frozenset(METRICS) - recurring: ["'$.amount'", "'$.gb'", "'$.model'", "'$.token_type'", "'$.user_id'", "'$.value'"],
        recurring: ["'$.delta'", "'$.operation_type'", "'$.user_id'"],
    }


def _filters_below(node: dict) -> list[str]:
    """The filter expressions of a DuckDB JSON plan node's subtree (FILTER nodes and scans)."""
    info = node.get("extra_info") or {}
    own = info.get("Filters", []) if node["name"] == "SEQ_SCAN" else [info.get("Expression", "")]
    return [*own, *(f for child in node["children"] for f in _filters_below(child))]


def _windows_in(node: dict) -> list[dict]:
    found = [node] if node["name"] == "WINDOW" else []
    return [*found, *(w for child in node["children"] for w in _windows_in(child))]


def test_duckdb_filters_the_scan_of_events_below_the_window(tmp_path):
    warehouse = DuckDbWarehouse(tmp_path / "w.duckdb")
    load_with_noise(warehouse)  # events on both sides of the scan, so no bound is dropped as always true
    query = UsageQuery(METRICS, [PLAN])
    cur = warehouse._conn.cursor()  # EXPLAIN is DuckDB's own SQL: no port method for it
    cur.execute("EXPLAIN (FORMAT json) " + sql.to_duckdb(usage.statement(query)), usage.params(query, WINDOWS))
    ((_, plan),) = cur.fetchall()
    windows = [w for root in json.loads(plan) for w in _windows_in(root)]
    bounds = sorted(
        (any("timestamp >=" in f for f in _filters_below(w)), any("timestamp <" in f for f in _filters_below(w)))
        for w in windows
    )
    assert bounds == [(False, True), (True, True)]  # carry-over: upper bound only; the rest: both
