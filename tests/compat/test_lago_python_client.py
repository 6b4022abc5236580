"""Lago's official Python client (`lago-python-client`, pinned in requirements-dev.txt) against
Meterline: create, find, find_all, update and destroy for every resource Meterline has, and
events (create, batch, find).

Every call goes through the client only, and must return the client's own model without an
exception (the client's pydantic models are the test of Meterline's answers). What was sent
is then read back twice: through the client, and from the target's store.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from lago_python_client.exceptions import LagoApiError
from lago_python_client.models import (
    BatchEvent,
    BillableMetric,
    BillableMetricFilter,
    BillableMetricFilters,
    Charge,
    ChargeFilter,
    ChargeFilters,
    Charges,
    Customer,
    CustomerBillingConfiguration,
    Event,
    Metadata,
    MetadataList,
    Plan,
    Subscription,
)
from lago_python_client.models.billable_metric import BillableMetricResponse
from lago_python_client.models.customer import CustomerResponse
from lago_python_client.models.event import EventResponse
from lago_python_client.models.plan import PlanResponse
from lago_python_client.models.subscription import SubscriptionResponse

from meterline.core.clock import iso_ms
from tests.compat.targets import find_event, unique

UNPROCESSABLE = {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors"}


def refused(call, status: int, body: dict) -> None:
    """The client raises LagoApiError carrying Meterline's exact Lago error body."""
    with pytest.raises(LagoApiError) as info:
        call()
    assert (info.value.status_code, info.value.response) == (status, body)


def not_found(resource: str) -> dict:
    return {"status": 404, "error": "Not Found", "code": f"{resource}_not_found"}


def is_uuid(text: str) -> bool:
    return str(uuid.UUID(text)) == text


def near_now(text: str) -> bool:
    return abs(datetime.fromisoformat(text.replace("Z", "+00:00")) - datetime.now(UTC)) < timedelta(minutes=2)


def tokens_metric(code: str) -> BillableMetric:
    return BillableMetric(
        name="LLM tokens", code=code, description="tokens by model", aggregation_type="sum_agg", field_name="tokens",
        recurring=False,
        filters=BillableMetricFilters(__root__=[
            BillableMetricFilter(key="model", values=["gpt-4o", "claude"]),
            BillableMetricFilter(key="token_type", values=["input", "output"]),
        ]),
    )


def seats_metric(code: str) -> BillableMetric:
    return BillableMetric(name="Seats", code=code, aggregation_type="unique_count_agg", field_name="user_id", recurring=True)


def two_charge_plan(code: str, tokens_id: str, seats_id: str, amount_cents: int = 4900) -> Plan:
    """A plan as a Lago user writes it: charges name their metrics by lago id."""
    return Plan(
        name="Team", code=code, interval="monthly", description="seats and tokens", amount_cents=amount_cents,
        amount_currency="USD", trial_period=0, pay_in_advance=False,
        charges=Charges(__root__=[
            Charge(billable_metric_id=seats_id, charge_model="standard", prorated=True, invoiceable=True,
                   properties={"amount": "20"}),
            Charge(billable_metric_id=tokens_id, charge_model="graduated", invoice_display_name="Tokens",
                   properties={"graduated_ranges": [
                       {"from_value": 0, "to_value": 1000000, "per_unit_amount": "0.00002", "flat_amount": "0"},
                       {"from_value": 1000001, "to_value": None, "per_unit_amount": "0.000015", "flat_amount": "0"}]},
                   filters=ChargeFilters(__root__=[ChargeFilter(
                       invoice_display_name="Output", values={"token_type": ["output"]},
                       properties={"graduated_ranges": [
                           {"from_value": 0, "to_value": None, "per_unit_amount": "0.00006", "flat_amount": "0"}]})])),
        ]),
    )


# ---------------------------------------------------------------------------------------------
# Billable metrics
# ---------------------------------------------------------------------------------------------


def test_billable_metrics_create_find_list_update_destroy(lago, target):
    code = unique("tokens")
    created = lago.billable_metrics.create(tokens_metric(code))
    assert isinstance(created, BillableMetricResponse)
    assert is_uuid(created.lago_id) and near_now(created.created_at)
    assert (created.code, created.name, created.aggregation_type, created.field_name) == (code, "LLM tokens", "sum_agg", "tokens")
    assert [(f.key, f.values) for f in created.filters.__root__] == [("model", ["gpt-4o", "claude"]), ("token_type", ["input", "output"])]

    stored = target.catalog.get_billable_metric(code)
    assert stored.to_lago() == {
        "code": code, "name": "LLM tokens", "description": "tokens by model", "aggregation_type": "sum_agg",
        "field_name": "tokens", "recurring": False, "rounding_function": None, "rounding_precision": None,
        "weighted_interval": None, "filters": [{"key": "model", "values": ["gpt-4o", "claude"]},
                                               {"key": "token_type", "values": ["input", "output"]}]}
    assert iso_ms(stored.created_at) == created.created_at and stored.lago_id == created.lago_id

    assert lago.billable_metrics.find(code) == created
    listed = lago.billable_metrics.find_all({"per_page": 100})
    assert created in listed["billable_metrics"] and listed["meta"]["total_count"] >= 1

    updated = lago.billable_metrics.update(BillableMetric(name="Tokens", description="every model"), code)
    assert isinstance(updated, BillableMetricResponse)
    assert (updated.lago_id, updated.created_at, updated.name, updated.field_name) == (created.lago_id, created.created_at, "Tokens", "tokens")
    after = target.catalog.get_billable_metric(code)
    assert (after.name, after.description, after.created_at) == ("Tokens", "every model", stored.created_at)
    assert after.updated_at > stored.updated_at

    refused(lambda: lago.billable_metrics.update(BillableMetric(code="other"), code), 422,
            {**UNPROCESSABLE, "error_details": {"code": ["value_is_immutable"]}})
    refused(lambda: lago.billable_metrics.create(tokens_metric(code)), 422,
            {**UNPROCESSABLE, "error_details": {"code": ["value_already_exist"]}})

    deleted = lago.billable_metrics.destroy(code)
    assert isinstance(deleted, BillableMetricResponse) and deleted.lago_id == created.lago_id
    assert target.catalog.get_billable_metric(code) is None
    refused(lambda: lago.billable_metrics.find(code), 404, not_found("billable_metric"))
    refused(lambda: lago.billable_metrics.destroy(code), 404, not_found("billable_metric"))


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------


def test_plans_create_find_list_update_destroy(lago, target):
    tokens = lago.billable_metrics.create(tokens_metric(unique("tokens")))
    seats = lago.billable_metrics.create(seats_metric(unique("seats")))
    code = unique("team")
    created = lago.plans.create(two_charge_plan(code, tokens.lago_id, seats.lago_id))
    assert isinstance(created, PlanResponse)
    assert is_uuid(created.lago_id) and near_now(created.created_at)
    assert (created.code, created.interval, created.amount_cents, created.amount_currency) == (code, "monthly", 4900, "USD")
    seat_charge, token_charge = created.charges.__root__
    assert (seat_charge.lago_billable_metric_id, seat_charge.billable_metric_code) == (seats.lago_id, seats.code)
    assert (token_charge.lago_billable_metric_id, token_charge.billable_metric_code) == (tokens.lago_id, tokens.code)
    assert is_uuid(seat_charge.lago_id) and seat_charge.lago_id != token_charge.lago_id
    assert token_charge.properties["graduated_ranges"][0]["per_unit_amount"] == "0.00002"
    assert token_charge.filters.__root__[0].values == {"token_type": ["output"]}

    stored = target.catalog.get_plan(code)
    assert [c.billable_metric_code for c in stored.charges] == [seats.code, tokens.code]  # stored by code
    assert str(stored.charges[1].properties.graduated_ranges[1].per_unit_amount) == "0.000015"
    assert (stored.amount_cents, stored.charges[0].prorated, stored.charges[1].invoice_display_name) == (4900, True, "Tokens")
    assert iso_ms(stored.created_at) == created.created_at

    assert lago.plans.find(code) == created
    assert created in lago.plans.find_all({"per_page": 100})["plans"]

    # An update as Lago's client sends it: the kept charge named by its lago_id.
    change = Plan(name="Team+", amount_cents=5900, charges=Charges(__root__=[
        Charge(id=seat_charge.lago_id, billable_metric_id=seats.lago_id, charge_model="standard", properties={"amount": "25"})]))
    updated = lago.plans.update(change, code)
    assert isinstance(updated, PlanResponse)
    assert (updated.lago_id, updated.created_at, updated.name, updated.amount_cents) == (created.lago_id, created.created_at, "Team+", 5900)
    [kept] = updated.charges.__root__
    assert (kept.lago_id, kept.properties, kept.prorated) == (seat_charge.lago_id, {"amount": "25"}, True)
    after = target.catalog.get_plan(code)
    assert (after.name, [c.ref for c in after.charges], after.updated_at > stored.updated_at) == ("Team+", [seats.code], True)

    # A metric a plan charges for cannot go; once the plan is gone, it can.
    refused(lambda: lago.billable_metrics.destroy(seats.code), 422,
            {**UNPROCESSABLE, "error_details": {"base": ["billable_metric_in_use"]}})
    deleted = lago.plans.destroy(code)
    assert isinstance(deleted, PlanResponse) and deleted.lago_id == created.lago_id
    assert target.catalog.get_plan(code) is None
    refused(lambda: lago.plans.find(code), 404, not_found("plan"))
    assert lago.billable_metrics.destroy(seats.code).code == seats.code


def test_a_plan_naming_an_unknown_metric_id_is_404(lago):
    plan = two_charge_plan(unique("p"), str(uuid.uuid4()), str(uuid.uuid4()))
    refused(lambda: lago.plans.create(plan), 404, not_found("billable_metric"))


# ---------------------------------------------------------------------------------------------
# Customers
# ---------------------------------------------------------------------------------------------


def test_customers_create_find_list_update_destroy(lago, target):
    external_id = unique("acme")
    body = Customer(
        external_id=external_id, name="Acme", email="billing@acme.test", currency="USD", timezone="Europe/Paris",
        country="FR", legal_name="Acme SAS", net_payment_term=30, customer_type="company",
        billing_configuration=CustomerBillingConfiguration(payment_provider="stripe", provider_customer_id="cus_1"),
        metadata=MetadataList(__root__=[Metadata(key="tier", value="gold", display_in_invoice=True)]),
    )
    created = lago.customers.create(body)
    assert isinstance(created, CustomerResponse)
    assert is_uuid(created.lago_id) and near_now(created.created_at) and created.updated_at == created.created_at
    assert (created.external_id, created.timezone, created.applicable_timezone) == (external_id, "Europe/Paris", "Europe/Paris")
    assert created.billing_configuration.payment_provider == "stripe"
    assert [(m.key, m.value, m.display_in_invoice) for m in created.metadata.__root__] == [("tier", "gold", True)]

    stored = target.catalog.get_customer(external_id)
    assert (stored.name, stored.email, stored.currency, stored.country, stored.net_payment_term) == ("Acme", "billing@acme.test", "USD", "FR", 30)
    assert stored.billing_configuration == {"payment_provider": "stripe", "provider_customer_id": "cus_1"}
    assert iso_ms(stored.created_at) == created.created_at

    assert lago.customers.find(external_id) == created
    assert created in lago.customers.find_all({"per_page": 100})["customers"]

    # Lago updates a customer by creating it again: the fields sent change, the others stay.
    time.sleep(0.01)
    updated = lago.customers.create(Customer(external_id=external_id, email="ap@acme.test"))
    assert (updated.lago_id, updated.created_at, updated.email, updated.name) == (created.lago_id, created.created_at, "ap@acme.test", "Acme")
    assert updated.updated_at > created.updated_at
    assert target.catalog.get_customer(external_id).email == "ap@acme.test"

    deleted = lago.customers.destroy(external_id)
    assert isinstance(deleted, CustomerResponse) and deleted.lago_id == created.lago_id
    assert target.catalog.get_customer(external_id) is None
    refused(lambda: lago.customers.find(external_id), 404, not_found("customer"))


# ---------------------------------------------------------------------------------------------
# Subscriptions
# ---------------------------------------------------------------------------------------------


def test_subscriptions_create_find_list_update_destroy(lago, target):
    tokens = lago.billable_metrics.create(tokens_metric(unique("tokens")))
    seats = lago.billable_metrics.create(seats_metric(unique("seats")))
    starter = lago.plans.create(two_charge_plan(unique("starter"), tokens.lago_id, seats.lago_id))
    pro = lago.plans.create(two_charge_plan(unique("pro"), tokens.lago_id, seats.lago_id, amount_cents=19900))
    customer = lago.customers.create(Customer(external_id=unique("cus"), currency="USD"))
    external_id = unique("sub")

    created = lago.subscriptions.create(Subscription(
        external_customer_id=customer.external_id, plan_code=starter.code, external_id=external_id, name="Main",
        subscription_at="2026-01-01T00:00:00Z", billing_time="calendar"))
    assert isinstance(created, SubscriptionResponse)
    assert is_uuid(created.lago_id) and near_now(created.created_at)
    assert (created.status, created.plan_code, created.lago_customer_id) == ("active", starter.code, customer.lago_id)
    assert (created.plan_amount_cents, created.plan_amount_currency) == ("4900", "USD")  # the client's model types it str
    assert created.started_at == "2026-01-01T00:00:00Z" and created.current_billing_period_started_at is not None

    [record] = target.catalog.get_subscription_history(external_id).records
    assert (record.lago_id, record.plan_code, record.name, record.external_customer_id) == (created.lago_id, starter.code, "Main", customer.external_id)
    assert record.subscription_at == datetime(2026, 1, 1, tzinfo=UTC)

    assert lago.subscriptions.find(external_id) == created
    listed = lago.subscriptions.find_all({"external_customer_id": customer.external_id})
    assert listed["subscriptions"] == [created]

    ending = (datetime.now(UTC) + timedelta(days=90)).replace(microsecond=0)
    updated = lago.subscriptions.update(Subscription(name="Renamed", ending_at=ending.isoformat()), external_id)
    assert isinstance(updated, SubscriptionResponse)
    assert (updated.lago_id, updated.name, updated.ending_at) == (created.lago_id, "Renamed", f"{ending:%Y-%m-%dT%H:%M:%SZ}")
    assert target.catalog.get_subscription_history(external_id).records[0].ending_at == ending

    # A plan change is a create; the new record has a lago_id of its own.
    upgraded = lago.subscriptions.create(Subscription(
        external_customer_id=customer.external_id, plan_code=pro.code, external_id=external_id))
    assert (upgraded.plan_code, upgraded.previous_plan_code, upgraded.status) == (pro.code, starter.code, "active")
    assert upgraded.lago_id != created.lago_id
    old = lago.subscriptions.find(external_id, {"status": "terminated"})
    assert (old.lago_id, old.next_plan_code) == (created.lago_id, pro.code)
    assert [r.lago_id for r in target.catalog.get_subscription_history(external_id).records] == [created.lago_id, upgraded.lago_id]

    # What billing still reads cannot be deleted.
    refused(lambda: lago.customers.destroy(customer.external_id), 422,
            {**UNPROCESSABLE, "error_details": {"base": ["customer_in_use"]}})
    refused(lambda: lago.plans.destroy(pro.code), 422, {**UNPROCESSABLE, "error_details": {"base": ["plan_in_use"]}})

    terminated = lago.subscriptions.destroy(external_id)
    assert isinstance(terminated, SubscriptionResponse)
    assert (terminated.lago_id, terminated.status) == (upgraded.lago_id, "terminated") and near_now(terminated.terminated_at)
    assert [r.status for r in target.catalog.get_subscription_history(external_id).records] == ["terminated", "terminated"]
    refused(lambda: lago.subscriptions.find(external_id), 404, not_found("subscription"))
    everything = lago.subscriptions.find_all({"external_customer_id": customer.external_id, "status[]": ["active", "terminated"]})
    assert [s.lago_id for s in everything["subscriptions"]] == [created.lago_id, upgraded.lago_id]


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def test_events_create_batch_and_find(own_target):
    lago = own_target.client()
    subscription = unique("sub")
    single = Event(transaction_id=unique("tx"), external_subscription_id=subscription, code="tokens_consumed",
                   timestamp=1767225600, properties={"tokens": "1200", "model": "gpt-4o"})
    answered = lago.events.create(single)
    assert isinstance(answered, EventResponse)
    assert is_uuid(answered.lago_id) and answered.timestamp == "2026-01-01T00:00:00.000Z"
    assert (answered.transaction_id, answered.code, answered.properties) == (single.transaction_id, "tokens_consumed", single.properties)

    # The client serialises unset fields as nulls (timestamp, amount, properties).
    batch = [Event(transaction_id=unique("tx"), external_subscription_id=subscription, code="tokens_consumed",
                   timestamp="1767225601.250", properties={"tokens": 7, "model": "claude"}),
             Event(transaction_id=unique("tx"), external_subscription_id=subscription, code="api_calls")]
    assert lago.events.batch_create(BatchEvent(events=batch)) is None

    found = {e.transaction_id: find_event(lago, e.transaction_id, subscription) for e in [single, *batch]}
    assert all(isinstance(f, EventResponse) for f in found.values())
    assert found[single.transaction_id].lago_id == answered.lago_id
    assert found[batch[0].transaction_id].timestamp == "2026-01-01T00:00:01.250Z"
    assert found[batch[1].transaction_id].properties == {}

    with own_target.warehouse() as warehouse:
        stored = {e.transaction_id: warehouse.get_event(subscription, e.transaction_id) for e in [single, *batch]}
    assert (stored[single.transaction_id].code, stored[single.transaction_id].properties) == ("tokens_consumed", {"tokens": "1200", "model": "gpt-4o"})
    assert stored[single.transaction_id].timestamp_us == 1767225600 * 1_000_000
    assert stored[batch[0].transaction_id].properties == {"tokens": 7, "model": "claude"}
    assert stored[batch[0].transaction_id].timestamp_us == 1767225601_250_000
    assert (stored[batch[1].transaction_id].code, stored[batch[1].transaction_id].properties) == ("api_calls", {})
