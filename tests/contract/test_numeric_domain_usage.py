"""Sums that cannot overflow, and one subscription's data never fails another's bill.

One subscription holds the largest values the numeric domain allows (`meterline.core.numbers`),
hundreds of them; another holds ordinary usage; a third holds what ingest stored before its
metric existed (29 nines, twice: once enough to overflow the whole usage query). All are read
in ONE query and rated, on DuckDB and on bqemulator. Then a warehouse that still fails on one
window: the others are returned, and the failing one is named.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, localcontext

import orjson
import pytest

from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription
from meterline.core.events import parse_batch_body
from meterline.core.messages import encode_message
from meterline.core.money import AmountOutOfRange
from meterline.core.pricing.periods import BillingSchedule, period_containing
from meterline.core.pricing.rating import rate_subscription
from meterline.core.pricing.usage import ChargeUsage
from meterline.core.usage_query import UsageQuery, UsageWindow
from meterline.services import usage as usage_service
from meterline.services.process import ProcessService
from meterline.services.usage import UsageService, read_usage
from tests.harness.backends import embedded_backend, gcp_backend
from tests.support import embedded_runtime

JAN = datetime(2026, 1, 1, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
T0 = int(JAN.timestamp())
MAX = Decimal("999999999999999999.999999999")
N_MAX = 250  # events at the max in one period: a sum of 2.5e20, far over what 64 bits hold

METRICS = {m["code"]: BillableMetric.model_validate(m) for m in [
    {"code": "tokens", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "value"},
    {"code": "peak", "name": "Peak", "aggregation_type": "max_agg", "field_name": "value"},
    {"code": "last", "name": "Last", "aggregation_type": "latest_agg", "field_name": "value"},
    {"code": "gb", "name": "GB", "aggregation_type": "weighted_sum_agg", "field_name": "value", "recurring": True},
]}
PLAN = Plan.model_validate({
    "code": "big", "name": "Big", "interval": "monthly", "amount_cents": 0, "amount_currency": "USD",
    "charges": [{"billable_metric_code": code, "charge_model": "standard", "properties": {"amount": "1"}} for code in METRICS],
})
SUBSCRIPTIONS = ("sub-max", "sub-small", "sub-old")


def ev(tx: str, sub: str, code: str, at: int, value) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": code, "timestamp": at, "properties": {"value": value}}


MAX_EVENTS = (
    [ev(f"m{i}", "sub-max", "tokens", T0 + i, str(MAX)) for i in range(N_MAX)]
    + [ev(f"n{i}", "sub-max", "tokens", T0 + i, str(-MAX)) for i in range(10)]
    + [ev("p1", "sub-max", "peak", T0 + 1, str(MAX)), ev("p2", "sub-max", "peak", T0 + 2, "1")]
    + [ev("l1", "sub-max", "last", T0 + 1, "1"), ev("l2", "sub-max", "last", T0 + 2, str(-MAX))]
    # the running total: MAX from the start, 2 x MAX from mid-January
    + [ev("g1", "sub-max", "gb", T0, str(MAX)), ev("g2", "sub-max", "gb", T0 + 31 * 43_200, str(MAX))]
)
SMALL_EVENTS = [ev(f"s{i}", "sub-small", "tokens", T0 + i, "12.5") for i in range(4)] + [
    ev("sp", "sub-small", "peak", T0, 7), ev("sl", "sub-small", "last", T0, "0.000000001"),
    ev("sg", "sub-small", "gb", T0, "10")]
# Stored before the metrics existed (ingest had no field to check): 29 nines, twice, which
# overflowed the one usage query for every subscription; and values past nine places.
OLD_EVENTS = [ev("o1", "sub-old", "tokens", T0, "9" * 29), ev("o2", "sub-old", "tokens", T0 + 1, "9" * 29),
              ev("o3", "sub-old", "tokens", T0 + 2, "0.0000000001"), ev("o4", "sub-old", "tokens", T0 + 3, "2"),
              ev("o5", "sub-old", "peak", T0 + 3, "1.0000000005")]
NUMERIC_FIELDS = {code: m.field_name for code, m in METRICS.items()}.get


def store(warehouse, dedup, events, numeric_field) -> None:
    """Through ingest's validation and the process service, 100 events a request."""
    process = ProcessService(dedup, warehouse)
    for start in range(0, len(events), 100):
        body = orjson.dumps({"events": events[start:start + 100]})
        process.handle_message(encode_message(parse_batch_body(body, T0 * 1_000_000, numeric_field)))


def units(usage, code) -> Decimal:
    return usage[(code, None)].units


def bill(backend) -> tuple[dict, dict]:
    store(backend.warehouse, backend.dedup, MAX_EVENTS + SMALL_EVENTS, NUMERIC_FIELDS)
    store(backend.warehouse, backend.dedup, OLD_EVENTS, None)
    windows = [UsageWindow(sub, sub, "big", JAN, FEB) for sub in SUBSCRIPTIONS]
    usage = read_usage(backend.warehouse, UsageQuery(METRICS, [PLAN]), windows)
    customer = Customer.model_validate({"external_id": "c", "currency": "USD", "timezone": "UTC"})
    drafts = {}
    for sub in SUBSCRIPTIONS:
        subscription = Subscription.model_validate(
            {"external_id": sub, "external_customer_id": "c", "plan_code": "big", "subscription_at": "2025-12-01T00:00:00Z"})
        period = period_containing(BillingSchedule.of(subscription, PLAN, customer), JAN)
        try:
            drafts[sub] = rate_subscription(subscription, PLAN, customer, period, usage[sub], metrics=METRICS)
        except AmountOutOfRange as refused:  # the usage is exact; its fees leave the money domain
            drafts[sub] = refused
    return usage, drafts


def check(usage, drafts) -> None:
    assert usage.failed == {}
    big, small, old = usage["sub-max"], usage["sub-small"], usage["sub-old"]
    with localcontext() as ctx:
        ctx.prec = 60  # the default 28 digits would round these expectations
        tokens = MAX * (N_MAX - 10)
        weighted = (MAX * 31 * 86_400 + MAX * 31 * 43_200) / (31 * 86_400)  # MAX all month, again for half of it
    assert str(tokens) == "239999999999999999999.999999760"
    assert units(big, "tokens") == tokens and big[("tokens", None)].events_count == N_MAX + 10
    assert (units(big, "peak"), units(big, "last"), units(big, "gb")) == (MAX, -MAX, weighted)
    assert (units(small, "tokens"), units(small, "peak"), units(small, "last"), units(small, "gb")) == (
        Decimal("50"), Decimal(7), Decimal("0.000000001"), Decimal(10))
    # Values outside the domain count for nothing, like "abc": only the 2 is summed.
    assert old[("tokens", None)] == ChargeUsage(units=Decimal(2), events_count=4)
    assert units(old, "peak") == 0

    def fees(sub):
        return {f.ref.charge_ref: f.amount_cents for f in drafts[sub].fees if f.ref.charge_ref}

    # Standard charges at 1 USD a unit; negative units are billed as 0 (Lago clamps them).
    # 2.4e20 USD is 2.4e22 cents, beyond the money domain (a signed 64-bit integer of minor
    # units, core.money): refused by rating, for the billing run to flag that subscription.
    assert isinstance(drafts["sub-max"], AmountOutOfRange) and "24000000000000000000000" in str(drafts["sub-max"])
    assert fees("sub-small") == {"tokens": 5000, "peak": 700, "last": 0, "gb": 1000}
    assert drafts["sub-small"].amount_cents == 6700
    assert fees("sub-old") == {"tokens": 200, "peak": 0, "last": 0, "gb": 0}


def test_the_largest_values_and_ordinary_usage_are_both_billed_on_duckdb(tmp_path):
    check(*bill(embedded_backend(tmp_path)))


@pytest.mark.servers
def test_the_largest_values_and_ordinary_usage_are_both_billed_on_bqemulator(request, monkeypatch):
    check(*bill(gcp_backend(request, monkeypatch)))


# -- a warehouse that still fails on one window ---------------------------------------------


class FailingFor:
    """A warehouse that refuses every query whose windows include one of `subscriptions` (as an
    overflow would), and counts the queries."""

    def __init__(self, inner, subscriptions=(), always: bool = False):
        self.inner, self.subscriptions, self.always = inner, set(subscriptions), always
        self.queries = 0

    def usage_rows(self, query, windows):
        self.queries += 1
        if self.always or any(w.external_subscription_id in self.subscriptions for w in windows):
            raise ArithmeticError("Out of Range Error: Overflow in HUGEINT addition")
        return self.inner.usage_rows(query, windows)


@pytest.fixture
def loaded(tmp_path):
    backend = embedded_backend(tmp_path)
    events = [ev(f"t{i}", f"sub-{i}", "tokens", T0 + i, str(i)) for i in range(40)]
    store(backend.warehouse, backend.dedup, events, NUMERIC_FIELDS)
    windows = [UsageWindow(f"w{i}", f"sub-{i}", "big", JAN, FEB) for i in range(40)]
    return backend.warehouse, windows


def test_a_window_the_warehouse_fails_on_is_named_and_the_others_are_returned(loaded):
    warehouse, windows = loaded
    query = UsageQuery(METRICS, [PLAN])
    clean = read_usage(warehouse, query, windows)
    failing = FailingFor(warehouse, {"sub-7", "sub-30"})
    usage = read_usage(failing, query, windows)
    assert usage.failed == {w: "ArithmeticError: Out of Range Error: Overflow in HUGEINT addition" for w in ("w7", "w30")}
    assert usage == {w: u for w, u in clean.items() if w not in ("w7", "w30")}
    assert usage["w8"][("tokens", None)].units == 8
    assert failing.queries <= 1 + 2 * 2 * 6  # halving: about 2 log2(40) queries per failing window, not 40


def test_a_warehouse_that_fails_every_window_raises_after_a_few_queries(loaded):
    warehouse, windows = loaded
    down = FailingFor(warehouse, always=True)
    with pytest.raises(ArithmeticError):
        read_usage(down, UsageQuery(METRICS, [PLAN]), windows)
    assert down.queries < 12  # the first windows all fail: the warehouse, not the data


def test_too_many_failing_windows_raise(loaded):
    warehouse, windows = loaded
    failing = FailingFor(warehouse, {f"sub-{i}" for i in range(0, 40, 2)})  # half of them
    with pytest.raises(ArithmeticError):
        read_usage(failing, UsageQuery(METRICS, [PLAN]), windows)
    assert usage_service._MAX_FAILED < 20


def test_the_usage_service_rates_everyone_else_and_flags_the_one(tmp_path):
    runtime = embedded_runtime(tmp_path)
    store(runtime.adapters.warehouse, runtime.adapters.dedup, SMALL_EVENTS + [
        {**e, "external_subscription_id": "sub-other"} for e in SMALL_EVENTS], NUMERIC_FIELDS)
    catalog, admin = runtime.adapters.catalog, runtime.admin.service
    for metric in METRICS.values():
        catalog.put_billable_metric(metric)
    catalog.put_plan(PLAN)
    admin.upsert_customer({"external_id": "c", "currency": "USD", "timezone": "UTC"})
    subscriptions = [admin.create_subscription({"external_id": sub, "external_customer_id": "c", "plan_code": "big",
                                                "subscription_at": "2025-12-01T00:00:00Z"})
                     for sub in ("sub-small", "sub-other")]
    service = UsageService(catalog, FailingFor(runtime.adapters.warehouse, {"sub-other"}))
    rated = service.current(subscriptions, datetime(2026, 1, 20, tzinfo=UTC))
    assert [r.subscription.external_id for r in rated] == ["sub-small"]
    assert rated[0].draft.amount_cents == 6700
    (failed,) = rated.failed
    assert failed.subscription.external_id == "sub-other" and failed.error.startswith("ArithmeticError")
    assert failed.period.start_utc == JAN
