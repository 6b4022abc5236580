"""The first customer's hybrid pricing, end to end: events in through ingest and process,
usage out of ONE query over events_deduped, fees from the pure rating core.

November 2026 (30 days, calendar billing, customer in UTC) on the example catalog
(shared/meterline/local/example_catalog.yaml): 49 USD base fee in arrears, 20 USD per seat prorated by day, and
graduated token prices for input (0.000003 up to 10M, then 0.0000025) and output
(0.000015 up to 10M, then 0.0000125).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from meterline.core.catalog import Customer, Subscription
from meterline.core.pricing.periods import BillingSchedule, period_containing
from meterline.core.pricing.rating import rate_subscription
from meterline.core.usage_query import UsageQuery, UsageWindow
from meterline.services.catalog_apply import load
from meterline.services.ingest import IngestService
from meterline.services.process import ProcessService
from meterline.services.usage import read_usage
from tests.contract.conftest import _embedded, _gcp
from tests.support import REPO_ROOT

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86_400
T = int(NOV.timestamp())


def tokens(tx, at, value, token_type=None):
    props = {"value": value, "model": "gpt-4o"}
    if token_type:
        props["token_type"] = token_type
    return {"transaction_id": tx, "external_subscription_id": "sub_acme", "code": "tokens_consumed",
            "timestamp": at, "properties": props}


def seat(tx, at, user, op="add"):
    return {"transaction_id": tx, "external_subscription_id": "sub_acme", "code": "seats",
            "timestamp": at, "properties": {"user_id": user, "operation_type": op}}


EVENTS = [
    seat("s1", T - 20 * DAY, "alice"),  # added in October: a full month in November
    seat("s2", T + 15 * DAY, "bob"),  # added on November 16: 15 of 30 days
    tokens("t1", T + 1 * DAY, 3_000_000, "input"),
    tokens("t2", T + 2 * DAY, "1000000", "input"),
    tokens("t3", T + 3 * DAY, 8_000_000, "output"),
    tokens("t4", T + 4 * DAY, 4_000_000, "output"),  # crosses the 10M output tier
    tokens("t5", T + 5 * DAY, 1_000_000),  # no token_type: the charge's own ranges
    tokens("t6", T + 31 * DAY, 9_999_999, "output"),  # December: not in this invoice
]


def run_pipeline(backend) -> dict[str, int]:
    # Ingest with retries (the same request twice), then process every message twice.
    ingest = IngestService(backend.bus)
    body = orjson.dumps({"events": EVENTS})
    ingest.create_batch(body)
    ingest.create_batch(body)
    process = ProcessService(backend.dedup, backend.warehouse)
    while deliveries := backend.pull(10):
        for d in deliveries:
            process.handle_message(d.data)
            process.handle_message(d.data)
            d.ack()

    catalog = load(REPO_ROOT / "shared/meterline/local/example_catalog.yaml")
    metrics = {m.code: m for m in catalog.billable_metrics}
    (plan,) = catalog.plans
    customer = Customer.model_validate({"external_id": "acme", "name": "Acme", "currency": "USD", "timezone": "UTC"})
    subscription = Subscription.model_validate({
        "external_id": "sub_acme", "external_customer_id": "acme", "plan_code": plan.code,
        "subscription_at": "2026-09-01T00:00:00Z", "started_at": "2026-09-01T00:00:00Z",
    })
    period = period_containing(BillingSchedule.of(subscription, plan, customer), NOV)
    assert (period.start_utc, period.end_utc, period.days) == (NOV, datetime(2026, 12, 1, tzinfo=UTC), 30)

    windows = [UsageWindow("w", "sub_acme", plan.code, period.start_utc, period.end_utc)]
    usage = read_usage(backend.warehouse, UsageQuery(metrics, [plan]), windows)["w"]
    draft = rate_subscription(subscription, plan, customer, period, usage, metrics=metrics)
    fees = {(f.ref.kind, f.ref.charge_ref, f.ref.filter_key): f for f in draft.fees}
    for fee in draft.fees:  # every line explains itself: its tiers add up to its unrounded amount
        if fee.details:
            assert fee.precise_amount == sum((d.amount for d in fee.details), Decimal(0))
    return {"total": draft.amount_cents, **{f"{k[1] or k[0]}:{k[2]}": f.amount_cents for k, f in fees.items()}}


EXPECTED = {
    "subscription:None": 4900,  # base fee, full month in arrears
    "seats:None": 3000,  # alice 20.00 + bob 15/30 x 20.00 = 10.00
    "tokens_consumed:token_type=input": 1200,  # 4M x 0.000003
    "tokens_consumed:token_type=output": 17500,  # 10M x 0.000015 + 2M x 0.0000125
    "tokens_consumed:None": 300,  # 1M x 0.000003
    "total": 26900,
}


def test_hybrid_invoice_from_real_events_on_duckdb(tmp_path):
    assert run_pipeline(_embedded(tmp_path)) == EXPECTED


@pytest.mark.servers
def test_hybrid_invoice_from_real_events_on_the_emulators(tmp_path, request, monkeypatch):
    assert run_pipeline(_gcp(request, monkeypatch)) == EXPECTED
