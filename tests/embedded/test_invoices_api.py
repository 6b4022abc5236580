"""The invoices API (Lago's shape) through `meterline serve`'s app, and the billing run
behind an API key there."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import orjson
import pytest

from meterline.core.clock import now_us
from meterline.local.app import create_app
from meterline.services.auth import create_api_key
from tests.harness.billing import DEC, HOUR, JAN, Billing
from tests.harness.november import NOV


@pytest.fixture
def api(tmp_path):
    billing = Billing(tmp_path)
    key = create_api_key(billing.runtime.adapters.api_keys, "finance", now_us())
    client = create_app(billing.runtime).test_client()
    return client, {"Authorization": f"Bearer {key}"}, billing


def test_a_billing_run_through_the_api_then_its_invoice_in_lago_s_shape(api):
    client, auth, billing = api
    assert client.post("/api/v1/billing_runs", json={"as_of": DEC.isoformat()}).status_code == 401
    run = client.post("/api/v1/billing_runs", json={"as_of": (DEC + 2 * HOUR).isoformat()}, headers=auth)
    assert run.status_code == 200 and orjson.loads(run.data)["billing_run"]["finalized"] == 1

    listed = orjson.loads(client.get("/api/v1/invoices?external_customer_id=acme", headers=auth).data)
    (invoice,) = listed["invoices"]
    assert listed["meta"]["total_count"] == 1
    assert (invoice["status"], invoice["payment_status"], invoice["currency"]) == ("finalized", "pending", "USD")
    assert invoice["total_amount_cents"] == invoice["fees_amount_cents"] == 26900
    assert sum(f["amount_cents"] for f in invoice["fees"]) == 26900
    assert invoice["number"].endswith("-0001") and invoice["issuing_date"] == "2026-12-01"
    one = orjson.loads(client.get(f"/api/v1/invoices/{invoice['lago_id']}", headers=auth).data)["invoice"]
    assert one == invoice


def test_filters_and_errors(api):
    client, auth, billing = api
    billing.run(JAN + 2 * HOUR)  # November and December
    def numbers(query: str) -> list[str]:
        return [i["issuing_date"] for i in orjson.loads(client.get(f"/api/v1/invoices?{query}", headers=auth).data)["invoices"]]

    assert numbers("") == ["2027-01-01", "2026-12-01"]  # newest first
    assert numbers("issuing_date_from=2026-12-15") == ["2027-01-01"]
    assert numbers("issuing_date_to=2026-12-15") == ["2026-12-01"]
    assert numbers("status=draft") == []
    assert numbers("external_customer_id=nobody") == []
    bad = client.get("/api/v1/invoices?issuing_date_from=soon&status=bogus", headers=auth)
    assert bad.status_code == 422
    assert set(orjson.loads(bad.data)["error_details"]) == {"issuing_date_from", "status"}
    missing = client.get("/api/v1/invoices/00000000-0000-0000-0000-000000000000", headers=auth)
    assert (missing.status_code, orjson.loads(missing.data)["code"]) == (404, "invoice_not_found")
    assert client.post("/api/v1/invoices", headers=auth).status_code == 405


def test_lago_s_own_client_parses_the_answers(api):
    from lago_python_client.client import Client
    from lago_python_client.models.invoice import InvoiceResponse

    client, auth, billing = api
    billing.run(JAN + 2 * HOUR)
    for invoice in orjson.loads(client.get("/api/v1/invoices", headers=auth).data)["invoices"]:
        parsed = InvoiceResponse.parse_obj(invoice)  # the client's strict response model
        assert parsed.lago_id == invoice["lago_id"] and parsed.total_amount_cents == invoice["total_amount_cents"]
        assert len(parsed.fees.__root__) == len(invoice["fees"])
    assert Client  # the full client round trip through `meterline serve` is in tests/compat


def test_the_admin_function_serves_the_invoices_api(tmp_path):
    import functions_framework

    from meterline.runtime import set_runtime
    from tests.support import REPO_ROOT

    billing = Billing(tmp_path)
    key = create_api_key(billing.runtime.adapters.api_keys, "finance", now_us())
    billing.run(DEC + 2 * HOUR)
    set_runtime(billing.runtime)
    try:
        client = functions_framework.create_app("admin", str(REPO_ROOT / "functions/admin/main.py")).test_client()
        answer = client.get("/api/v1/invoices", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        (invoice,) = orjson.loads(answer.data)["invoices"]
        assert invoice["total_amount_cents"] == 26900
        assert client.get("/api/v1/invoices").status_code == 401
    finally:
        set_runtime(None)


# -- what an invoice names: its customer, subscriptions, billing periods, charges and metrics ----


def _get(client, auth, path: str) -> dict:
    answer = client.get(path, headers=auth)
    assert answer.status_code == 200, answer.data
    return orjson.loads(answer.data)


def _parsed(invoice: dict):
    """The invoice as Lago's client reads it (its strict response model)."""
    from lago_python_client.models.invoice import InvoiceResponse

    return InvoiceResponse.parse_obj(invoice)


def test_an_invoice_names_its_customer_subscription_and_billing_period(api):
    client, auth, billing = api
    billing.run(DEC + 2 * HOUR)
    (invoice,) = _get(client, auth, "/api/v1/invoices")["invoices"]
    parsed = _parsed(invoice)

    # The customers and subscriptions APIs' own objects, field for field.
    assert invoice["customer"] == _get(client, auth, "/api/v1/customers/acme")["customer"]
    assert parsed.customer.external_id == "acme" and parsed.customer.lago_id == invoice["customer"]["lago_id"]
    subscription = _get(client, auth, "/api/v1/subscriptions/sub_acme")["subscription"]
    assert invoice["subscriptions"] == [subscription]
    assert [s.external_id for s in parsed.subscriptions.__root__] == ["sub_acme"]

    plan = _get(client, auth, f"/api/v1/plans/{billing.plan.code}")["plan"]
    (period,) = parsed.billing_periods.__root__
    assert (period.lago_subscription_id, period.external_subscription_id, period.lago_plan_id) == (
        subscription["lago_id"], "sub_acme", plan["lago_id"])
    # November, the invoice's period, in Lago's inclusive form; in arrears, fee and charges alike.
    november = ("2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z")
    assert (period.subscription_from_datetime, period.subscription_to_datetime) == november
    assert (period.charges_from_datetime, period.charges_to_datetime) == november
    assert period.invoicing_reason == "subscription_periodic"


def test_each_fee_names_its_charge_filter_and_metric_as_the_catalog_api_does(api):
    client, auth, billing = api
    billing.run(DEC + 2 * HOUR)
    (invoice,) = _get(client, auth, "/api/v1/invoices")["invoices"]
    fees = _parsed(invoice).fees.__root__
    plan = _get(client, auth, f"/api/v1/plans/{billing.plan.code}")["plan"]
    charge_of_metric = {c["billable_metric_code"]: c for c in plan["charges"]}
    subscription = _get(client, auth, "/api/v1/subscriptions/sub_acme")["subscription"]

    (base,) = [f for f in fees if f.item.type == "subscription"]
    assert (base.item.code, base.item.name, base.item.item_type) == (plan["code"], plan["name"], "Subscription")
    assert base.item.lago_item_id == subscription["lago_id"]
    assert base.lago_charge_id is None and base.lago_charge_filter_id is None

    charged = [f for f in fees if f.item.type == "charge"]
    assert sorted(f.item.code for f in charged) == ["seats", "tokens_consumed", "tokens_consumed", "tokens_consumed"]
    for fee in charged:
        metric = _get(client, auth, f"/api/v1/billable_metrics/{fee.item.code}")["billable_metric"]
        charge = charge_of_metric[fee.item.code]
        assert fee.lago_charge_id == charge["lago_id"]
        assert (fee.item.lago_item_id, fee.item.name, fee.item.item_type) == (
            metric["lago_id"], metric["name"], "BillableMetric")
        assert fee.item.invoice_display_name == charge["invoice_display_name"]
    # The token charge's filters: input and output have their own fee, the rest the charge's.
    filtered = {f.item.filter_invoice_display_name: f for f in charged if f.item.code == "tokens_consumed"}
    assert set(filtered) == {"Input tokens", "Output tokens", None}
    assert filtered["Input tokens"].item.filters == {"token_type": ["input"]}
    assert filtered[None].lago_charge_filter_id is None and filtered[None].item.filters is None
    ids = {filtered[name].lago_charge_filter_id for name in ("Input tokens", "Output tokens")}
    assert len(ids) == 2 and None not in ids
    # Stable: the same ids on every answer (derived, not stored).
    again = _get(client, auth, f"/api/v1/invoices/{invoice['lago_id']}")["invoice"]
    assert [f["lago_charge_filter_id"] for f in again["fees"]] == [f["lago_charge_filter_id"] for f in invoice["fees"]]


def test_a_page_reads_each_catalog_object_once(api):
    client, auth, billing = api
    billing.admin.upsert_customer({"external_id": "globex", "currency": "USD"})
    billing.admin.create_subscription({"external_id": "sub_globex", "external_customer_id": "globex",
                                       "plan_code": billing.plan.code, "subscription_at": "2026-11-01T00:00:00Z"})
    billing.run(JAN + 2 * HOUR)  # November and December, for both customers
    store = billing.runtime.adapters.catalog
    reads: Counter[tuple[str, str]] = Counter()

    def counting(name):
        read = getattr(store, name)

        def counted(key):
            reads[(name, key)] += 1
            return read(key)
        return counted

    names = ("get_customer", "get_plan", "get_billable_metric", "get_subscription_history")
    for name in names:
        setattr(store, name, counting(name))
    try:
        listed = _get(client, auth, "/api/v1/invoices")
    finally:
        for name in names:
            delattr(store, name)  # the class's methods again
    assert len(listed["invoices"]) == 4 and sum(len(i["fees"]) for i in listed["invoices"]) > 4 * 4
    assert set(reads.values()) == {1}  # however many invoices and fees name them
    assert set(reads) == {
        ("get_customer", "acme"), ("get_customer", "globex"), ("get_plan", billing.plan.code),
        ("get_billable_metric", "seats"), ("get_billable_metric", "tokens_consumed"),
        ("get_subscription_history", "sub_acme"), ("get_subscription_history", "sub_globex"),
    }


def test_a_plan_change_inside_the_period_gives_two_billing_periods(api):
    client, auth, billing = api
    bigger = billing.plan.model_copy(update={"code": "team_plus", "name": "Team plus", "amount_cents": 9900})
    billing.runtime.adapters.catalog.put_plan(bigger)
    switch = NOV + timedelta(days=15)
    upgrade = billing.admin.__class__(billing.runtime.adapters.catalog, clock=lambda: switch)
    upgrade.create_subscription({"external_id": "sub_acme", "external_customer_id": "acme", "plan_code": "team_plus"})
    billing.run(DEC + 2 * HOUR)
    (invoice,) = _get(client, auth, "/api/v1/invoices")["invoices"]
    parsed = _parsed(invoice)

    old, new = billing.runtime.adapters.catalog.get_subscription_history("sub_acme").records
    assert [s.lago_id for s in parsed.subscriptions.__root__] == [old.lago_id, new.lago_id]
    assert [(s.plan_code, s.status) for s in parsed.subscriptions.__root__] == [
        (billing.plan.code, "terminated"), ("team_plus", "active")]
    periods = {p.lago_subscription_id: p for p in parsed.billing_periods.__root__}
    def span(record):
        period = periods[record.lago_id]
        return period.charges_from_datetime, period.charges_to_datetime, period.invoicing_reason

    # The old record's part ends at the switch, the instant itself; the new one's at November's last second.
    assert span(old) == ("2026-11-01T00:00:00Z", "2026-11-16T00:00:00Z", "subscription_terminating")
    assert span(new) == ("2026-11-16T00:00:00Z", "2026-11-30T23:59:59Z", "subscription_periodic")
    assert periods[new.lago_id].lago_plan_id == _get(client, auth, "/api/v1/plans/team_plus")["plan"]["lago_id"]
    # Each record's base fee names its own record, and each charge its own plan's charge.
    bases = {f.item.code: f.item.lago_item_id for f in parsed.fees.__root__ if f.item.type == "subscription"}
    assert bases == {billing.plan.code: old.lago_id, "team_plus": new.lago_id}
    plus_charges = {c["lago_id"] for c in _get(client, auth, "/api/v1/plans/team_plus")["plan"]["charges"]}
    team_charges = {c["lago_id"] for c in _get(client, auth, f"/api/v1/plans/{billing.plan.code}")["plan"]["charges"]}
    by_plan = {line.ref: line.plan_code for line in billing.all()[0].lines}
    for fee in parsed.fees.__root__:
        if fee.item.type == "charge":
            plan_code = by_plan[fee.lago_id.split(":", 1)[1]]
            assert fee.lago_charge_id in (plus_charges if plan_code == "team_plus" else team_charges)


def test_a_terminated_subscription_s_last_period_ends_at_its_termination(api):
    client, auth, billing = api
    billing.run(DEC + 2 * HOUR)
    terminate = billing.admin.__class__(billing.runtime.adapters.catalog, clock=lambda: DEC + timedelta(days=15))
    terminate.terminate_subscription("sub_acme")
    billing.run(DEC + timedelta(days=15, hours=2))
    december = _parsed(_get(client, auth, "/api/v1/invoices?issuing_date_from=2026-12-15")["invoices"][0])
    (period,) = december.billing_periods.__root__
    december_1_to_15 = ("2026-12-01T00:00:00Z", "2026-12-16T00:00:00Z")  # ends at the termination itself
    assert (period.charges_from_datetime, period.charges_to_datetime) == december_1_to_15
    assert (period.subscription_from_datetime, period.subscription_to_datetime) == december_1_to_15
    assert period.invoicing_reason == "subscription_terminating"
    assert [s.status for s in december.subscriptions.__root__] == ["terminated"]


def test_an_invoice_whose_catalog_changed_since_still_renders(api):
    client, auth, billing = api
    billing.run(DEC + 2 * HOUR)
    (before,) = _get(client, auth, "/api/v1/invoices")["invoices"]
    store = billing.runtime.adapters.catalog
    # The seats charge dropped from the plan, then the plan and the customer deleted behind
    # the service's back (it refuses while a subscription is billed; a restore could do it).
    billing.admin.update_plan(billing.plan.code, {"charges": [
        {"id": c["lago_id"]} for c in _get(client, auth, f"/api/v1/plans/{billing.plan.code}")["plan"]["charges"]
        if c["billable_metric_code"] != "seats"]})
    (dropped,) = _get(client, auth, "/api/v1/invoices")["invoices"]
    seats_before = next(f for f in before["fees"] if f["item"]["code"] == "seats")
    seats_after = next(f for f in dropped["fees"] if f["lago_id"] == seats_before["lago_id"])
    assert seats_after["lago_charge_id"] == seats_before["lago_charge_id"]  # derived: the id the charge had
    assert seats_after["item"]["code"] is None and seats_after["item"]["name"] == seats_after["description"]

    store.delete_plan(billing.plan.code)
    store.delete_customer("acme")
    answer = client.get("/api/v1/invoices", headers=auth)
    assert answer.status_code == 200
    (after,) = orjson.loads(answer.data)["invoices"]
    parsed = _parsed(after)
    assert parsed.customer is None and after["external_customer_id"] == "acme"
    (subscription,) = parsed.subscriptions.__root__
    assert subscription.external_id == "sub_acme" and subscription.plan_amount_cents is None
    assert after["billing_periods"] == before["billing_periods"]  # derived from the records and ids alone
    assert [f["lago_charge_id"] for f in after["fees"]] == [f["lago_charge_id"] for f in before["fees"]]
    assert [f["amount_cents"] for f in after["fees"]] == [f["amount_cents"] for f in before["fees"]]
    one = client.get(f"/api/v1/invoices/{after['lago_id']}", headers=auth)
    assert one.status_code == 200 and orjson.loads(one.data)["invoice"] == after


def test_a_plan_paid_in_advance_says_which_period_its_base_fee_pays_for(api):
    client, auth, billing = api
    ahead = billing.plan.model_copy(update={"code": "team_ahead", "pay_in_advance": True, "charges": ()})
    billing.runtime.adapters.catalog.put_plan(ahead)
    billing.admin.upsert_customer({"external_id": "initech", "currency": "USD", "timezone": "UTC"})
    billing.admin.create_subscription({"external_id": "sub_initech", "external_customer_id": "initech",
                                       "plan_code": "team_ahead", "subscription_at": "2026-11-01T00:00:00Z"})
    billing.run(DEC + 2 * HOUR)
    starting, invoice = sorted(_get(client, auth, "/api/v1/invoices?external_customer_id=initech")["invoices"],
                               key=lambda i: i["sequential_id"])
    # The first period's own base fee, on the invoice made as the subscription started.
    (first,) = _parsed(starting).billing_periods.__root__
    assert first.invoicing_reason == "subscription_starting" and starting["issuing_date"] == "2026-11-01"
    assert (first.subscription_from_datetime, first.subscription_to_datetime) == (
        "2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z")
    assert [f["item"]["type"] for f in starting["fees"]] == ["subscription"]
    (period,) = _parsed(invoice).billing_periods.__root__
    # November's invoice: the base fee for December (in advance), the charges for November.
    december = ("2026-12-01T00:00:00Z", "2026-12-31T23:59:59Z")
    november = ("2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z")
    assert (period.subscription_from_datetime, period.subscription_to_datetime) == december
    assert (period.charges_from_datetime, period.charges_to_datetime) == november
    (base,) = invoice["fees"]
    assert base["item"]["lago_item_id"] == period.lago_subscription_id
