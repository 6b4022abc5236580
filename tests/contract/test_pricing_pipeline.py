"""The first customer's hybrid pricing, end to end: events in through ingest and process,
usage out of ONE query over events_deduped, fees from the pure rating core.

November 2026 (30 days, calendar billing, customer in UTC) on the example catalog
(shared/meterline/local/example_catalog.yaml); the events and the expected invoice are in
tests/harness/november.py.
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
from tests.harness.backends import embedded_backend, gcp_backend
from tests.harness.november import EVENTS, EXPECTED, NOV
from tests.support import REPO_ROOT


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


def test_hybrid_invoice_from_real_events_on_duckdb(tmp_path):
    assert run_pipeline(embedded_backend(tmp_path)) == EXPECTED


@pytest.mark.servers
def test_hybrid_invoice_from_real_events_on_the_emulators(tmp_path, request, monkeypatch):
    assert run_pipeline(gcp_backend(request, monkeypatch)) == EXPECTED
