"""Lago's official Python client reads the invoices a billing run made, through `meterline
serve`: `invoices.find_all` (with its filters) and `invoices.find` return the client's own
`InvoiceResponse` models, and what they carry is what the store holds."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from lago_python_client.models import Event
from lago_python_client.models.invoice import InvoiceResponse

from meterline.services.admin import AdminService
from tests.compat.targets import serve_target, unique


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with serve_target(tmp_path_factory.mktemp("serve")) as running:
        yield running


def test_the_client_lists_and_finds_the_invoices_of_a_billing_run(target):
    lago = target.client()
    admin = AdminService(target.catalog)
    metric, plan, customer, subscription = unique("calls"), unique("plan"), unique("cust"), unique("sub")
    admin.create_billable_metric({"name": "Calls", "code": metric, "aggregation_type": "count_agg"})
    admin.create_plan({"name": "Plan", "code": plan, "interval": "monthly", "amount_cents": 1000, "amount_currency": "EUR",
                       "charges": [{"billable_metric_code": metric, "charge_model": "standard", "properties": {"amount": "0.25"}}]})
    admin.upsert_customer({"external_id": customer, "currency": "EUR"})
    this_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    admin.create_subscription({"external_id": subscription, "external_customer_id": customer, "plan_code": plan,
                               "subscription_at": last_month.isoformat()})
    for i in range(3):
        lago.events.create(Event(transaction_id=f"{subscription}-{i}", external_subscription_id=subscription, code=metric,
                                 timestamp=int((last_month + timedelta(days=i + 1)).timestamp())))

    auth = {"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"}
    counted = urllib.request.Request(f"{target.url}/api/v1/events?external_subscription_id={subscription}", headers=auth)
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while datetime.now(UTC) < deadline:  # the events reach the warehouse a moment after their 200
        with urllib.request.urlopen(counted, timeout=30) as answer:
            if orjson.loads(answer.read())["meta"]["total_count"] == 3:
                break

    # The billing run, as `meterline bill` starts it through the server (which holds the warehouse).
    run = urllib.request.Request(f"{target.url}/api/v1/billing_runs", method="POST", headers=auth,
                                 data=orjson.dumps({"as_of": (this_month + timedelta(hours=2)).isoformat()}))
    with urllib.request.urlopen(run, timeout=60) as answer:
        assert answer.status == 200
    found = lago.invoices.find_all({"external_customer_id": customer})
    invoices = found["invoices"]

    (invoice,) = invoices
    assert isinstance(invoice, InvoiceResponse)
    assert (invoice.status, invoice.payment_status, invoice.currency) == ("finalized", "pending", "EUR")
    assert invoice.total_amount_cents == 1000 + 75  # base fee and 3 calls x 0.25
    assert sum(f.amount_cents for f in invoice.fees.__root__) == invoice.total_amount_cents
    assert found["meta"]["total_count"] == 1
    one = lago.invoices.find(invoice.lago_id)
    assert isinstance(one, InvoiceResponse) and one.number == invoice.number
    assert lago.invoices.find_all({"external_customer_id": customer, "status": "draft"})["invoices"] == []
