"""The usage service: catalog -> period -> one usage query -> rating, on the embedded adapters.

The same figures as the end-to-end pipeline test (tests/contract/test_pricing_pipeline.py),
reached through the store and the service the demo, billing and the portal share.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from meterline.core.errors import NotFound
from meterline.core.events import parse_batch_body
from meterline.core.messages import encode_message
from meterline.services import catalog_apply
from meterline.services.usage import UsageService
from tests.harness.november import EVENTS, EXPECTED, NOV
from tests.support import REPO_ROOT, embedded_runtime

EXAMPLE = REPO_ROOT / "shared/meterline/local/example_catalog.yaml"


@pytest.fixture
def seeded(tmp_path):
    runtime = embedded_runtime(tmp_path)
    store = runtime.adapters.catalog
    catalog = catalog_apply.load(EXAMPLE)
    catalog_apply.apply(store, catalog, catalog_apply.plan_changes(store, catalog))
    admin = runtime.admin.service
    admin.upsert_customer({"external_id": "acme", "name": "Acme", "currency": "USD", "timezone": "UTC"})
    subscription = admin.create_subscription({"external_id": "sub_acme", "external_customer_id": "acme",
                                              "plan_code": catalog.plans[0].code, "subscription_at": "2026-09-01T00:00:00Z"})
    events = parse_batch_body(orjson.dumps({"events": EVENTS}), int(NOV.timestamp()) * 1_000_000)
    runtime.process.service.handle_message(encode_message(events))
    return runtime, subscription


def amounts(rated) -> dict[str, int]:
    fees = {f"{f.ref.charge_ref or f.ref.kind}:{f.ref.filter_key}": f.amount_cents for f in rated.draft.fees}
    return {"total": rated.draft.amount_cents, **fees}


def test_current_usage_rates_the_period_containing_the_instant(seeded):
    runtime, subscription = seeded
    service = UsageService(runtime.adapters.catalog, runtime.adapters.warehouse)
    (rated,) = service.current([subscription], datetime(2026, 11, 20, tzinfo=UTC))
    assert (rated.period.start_utc, rated.period.end_utc) == (NOV, datetime(2026, 12, 1, tzinfo=UTC))
    assert rated.customer.external_id == "acme" and rated.plan.code == subscription.plan_code
    assert amounts(rated) == EXPECTED  # the pipeline test's invoice, to the cent


def test_rate_takes_explicit_periods_and_one_query_serves_them_all(seeded):
    runtime, subscription = seeded
    service = UsageService(runtime.adapters.catalog, runtime.adapters.warehouse)
    november = service.current([subscription], NOV)[0].period
    december = service.current([subscription], datetime(2026, 12, 5, tzinfo=UTC))[0].period
    calls = []
    original = runtime.adapters.warehouse.usage_rows
    runtime.adapters.warehouse.usage_rows = lambda *a: calls.append(1) or original(*a)
    nov, dec = service.rate([(subscription, november), (subscription, december)])
    assert len(calls) == 1
    assert amounts(nov) == EXPECTED
    # December: base 49.00, two full seats 40.00, and 9,999,999 output tokens x 0.000015 = 149.999985 -> 150.00
    assert dec.draft.amount_cents == 4900 + 4000 + 15000


def test_a_subscription_whose_plan_is_gone_is_named(seeded):
    runtime, subscription = seeded
    service = UsageService(runtime.adapters.catalog, runtime.adapters.warehouse)
    with pytest.raises(NotFound) as caught:
        service.current([subscription.model_copy(update={"plan_code": "nope"})], NOV)
    assert caught.value.resource == "plan"
