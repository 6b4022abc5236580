"""Tenant isolation, the billing part on the emulators: Firestore catalog and invoice store,
the bqemulator warehouse. Victims whose amounts overflow, whose plan reads a name the SQL
cannot (stored before the rule), and whose values are extreme but billable, with 40
bystanders, in ONE billing run: the bystanders exact to the cent, each victim billed exactly
or flagged with its reason. (`test_tenant_isolation.py` is the embedded suite, through HTTP.)
"""

from __future__ import annotations

import random
from decimal import Decimal

import orjson
import pytest

from meterline.core.catalog import BillableMetric
from meterline.core.clock import now_us
from meterline.core.events import parse_batch_body
from meterline.services.admin import AdminService
from meterline.services.billing import BillingService
from meterline.services.process import ProcessService
from meterline.services.usage import UsageService
from tests.harness.backends import gcp_billing_stores
from tests.harness.tenants import AS_OF, BASE_CENTS, BYSTANDERS, NOV, PRICE, cents

pytestmark = pytest.mark.servers


def test_one_run_on_the_emulators_bills_every_bystander_exactly_and_flags_each_victim(
        firestore_emulator, bigquery_emulator, monkeypatch):
    from meterline.adapters.gcp.firestore_dedup import FirestoreDedupStore

    stores = gcp_billing_stores(firestore_emulator, bigquery_emulator, monkeypatch)
    firestore, catalog, invoices, warehouse = stores.firestore, stores.catalog, stores.invoices, stores.warehouse
    admin = AdminService(catalog)

    def plan(code: str, amount: str, metric: str = "tokens", base: int = 0) -> None:
        admin.create_plan({"code": code, "name": code, "interval": "monthly", "amount_cents": base,
                           "amount_currency": "USD", "charges": [{"billable_metric_code": metric,
                                                                  "charge_model": "standard",
                                                                  "properties": {"amount": amount}}]})

    def subscribe(sub: str, plan_code: str) -> None:
        admin.upsert_customer({"external_id": f"cus_{sub}", "currency": "USD"})
        admin.create_subscription({"external_id": sub, "external_customer_id": f"cus_{sub}", "plan_code": plan_code,
                                   "subscription_at": NOV.isoformat()})

    admin.create_billable_metric({"code": "tokens", "name": "tokens", "aggregation_type": "sum_agg", "field_name": "value"})
    # A metric stored before the property-name rule existed, as an old catalog holds it.
    catalog.put_billable_metric(BillableMetric.model_validate(
        {"code": "dotted", "name": "D", "aggregation_type": "sum", "field_name": "usage.tokens"}, context={"stored": True}))
    plan("bystander", str(PRICE), base=BASE_CENTS)
    plan("unit", "1")
    plan("tiny", "0.0000000001")
    plan("dotted", "1", metric="dotted")
    subscribe("sub_overflow", "unit")
    subscribe("sub_extreme", "tiny")
    subscribe("sub_dotted", "dotted")

    rng = random.Random(23)
    events: list[dict] = []
    expected: dict[str, int] = {}

    def event(sub: str, k: int, properties: dict, code: str = "tokens") -> dict:
        return {"transaction_id": f"{sub}-{k}", "external_subscription_id": sub, "code": code,
                "timestamp": int(NOV.timestamp()) + 3600 * (k + 1), "properties": properties}

    for i in range(BYSTANDERS):
        subscribe(f"sub_{i}", "bystander")
        values = [rng.choice([rng.randint(1, 90_000), f"{rng.randint(0, 999)}.{rng.randint(0, 999_999_999):09d}"])
                  for _ in range(3)]
        events += [event(f"sub_{i}", k, {"value": v}) for k, v in enumerate(values)]
        expected[f"sub_{i}"] = BASE_CENTS + cents(sum(Decimal(str(v)) for v in values) * PRICE)
    events.append(event("sub_overflow", 0, {"value": 999999999999999999}))
    extreme = ["999999999999999999.999999999", "-999999999999999999", "0.000000001", "999999999999999999"]
    events += [event("sub_extreme", k, {"value": v}) for k, v in enumerate(extreme)]
    expected["sub_extreme"] = cents(sum(Decimal(v) for v in extreme) * Decimal("0.0000000001"))
    events.append(event("sub_dotted", 0, {"usage.tokens": 5}, "dotted"))

    process = ProcessService(FirestoreDedupStore(firestore), warehouse)
    for k in range(0, len(events), 100):
        process.handle_events(parse_batch_body(orjson.dumps({"events": events[k:k + 100]}), now_us()))

    result = BillingService(catalog, UsageService(catalog, warehouse), invoices, warehouse).run(AS_OF)
    assert result.failed == {}
    assert result.flag_reasons == {"sub_overflow": "amount_out_of_range", "sub_dotted": "unusable_property_name"}
    stored = {i.subscription_external_id: i for i in invoices.list()[0]}
    assert {sub: (i.status, i.amount_cents) for sub, i in stored.items()} == {
        sub: ("finalized", total) for sub, total in expected.items()}
