"""The billing run on the embedded adapters (SQLite invoice store, DuckDB warehouse), with no
payment provider: a closed period becomes one exact invoice, whatever the reruns.

The Stripe side of the run has its own tests against localstripe (tests/contract).
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest

from meterline.core.clock import now_us, to_us
from meterline.core.events import parse_batch_body
from meterline.services.billing import BillingService
from meterline.services.usage import UsageService
from tests.harness.billing import DEC, HOUR, JAN, Billing, amounts
from tests.harness.november import EXPECTED, NOV, seat, tokens


@pytest.fixture
def billing(tmp_path) -> Billing:
    return Billing(tmp_path)


def test_a_closed_month_becomes_a_draft_then_one_exact_finalized_invoice(billing):
    result = billing.run(DEC + HOUR / 2)  # inside the default one-hour grace period
    assert (result.drafted, result.finalized) == (1, 0)
    (draft,) = billing.all()
    assert draft.status == "draft" and draft.number is None
    assert (draft.period_start, draft.period_end) == (NOV.date(), (DEC - timedelta(days=1)).date())
    assert amounts(draft) == EXPECTED  # the pricing pipeline's invoice, to the cent

    result = billing.run(DEC + HOUR + timedelta(seconds=1))
    assert result.finalized == 1
    (invoice,) = billing.all()
    assert invoice.status == "finalized" and invoice.sequential_id == 1 and invoice.number.endswith("-0001")
    assert amounts(invoice) == EXPECTED
    assert sum(line.amount_cents for line in invoice.lines) == invoice.amount_cents == 26900


def test_events_in_the_grace_period_are_counted_on_the_draft(billing):
    billing.run(DEC + HOUR / 4)
    billing.post([tokens("grace-1", int((NOV + timedelta(days=29)).timestamp()), 1_000_000, "input")])
    result = billing.run(DEC + HOUR / 2)
    assert result.refreshed == 1
    billing.run(DEC + 2 * HOUR)
    (invoice,) = billing.all()
    assert invoice.status == "finalized"
    assert amounts(invoice)["tokens_consumed:token_type=input"] == EXPECTED["tokens_consumed:token_type=input"] + 300


def test_reruns_and_concurrent_runs_make_one_invoice_and_one_number(billing):
    for _ in range(3):
        billing.run(DEC + 2 * HOUR)
    runs = [threading.Thread(target=billing.run, args=(DEC + 3 * HOUR,)) for _ in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    (invoice,) = billing.all()
    assert invoice.sequential_id == 1 and amounts(invoice) == EXPECTED


def test_late_usage_goes_on_the_next_invoice_priced_in_its_own_period(billing):
    billing.run(DEC + 2 * HOUR)
    (november,) = billing.all()
    # November had 12M output tokens (10M at 0.000015, then 0.0000125): 1M more, arriving
    # after November was finalized, costs 12.50 (the second tier), not 15.00.
    billing.post([tokens("late-1", int((NOV + timedelta(days=20)).timestamp()), 1_000_000, "output")])
    billing.run(JAN + 2 * HOUR)
    invoices = {i.period_start: i for i in billing.all()}
    assert invoices[NOV.date()] == november  # a finalized invoice never changes
    december = invoices[DEC.date()]
    (late,) = [line for line in december.lines if line.kind == "late_usage"]
    assert late.amount_cents == 1250 and "Late usage for 2026-11-01..2026-11-30" in late.description
    # Billed once: the next run neither repeats it on January's draft nor changes December.
    billing.run(datetime(2027, 2, 1, 2, tzinfo=UTC))
    assert {i.period_start: i for i in billing.all()}[DEC.date()] == december
    january = {i.period_start: i for i in billing.all()}[JAN.date()]
    assert not [line for line in january.lines if line.kind == "late_usage"]


def test_finance_tables_refusing_a_write_fail_no_subscription(billing):
    adapters = billing.runtime.adapters

    class Refusing:
        def __getattr__(self, name):
            return getattr(adapters.warehouse, name)

        def record_invoices(self, invoices, recorded_at_us):
            raise RuntimeError("finance tables unavailable")

    usage = UsageService(adapters.catalog, adapters.warehouse)
    result = BillingService(adapters.catalog, usage, billing.invoices, Refusing()).run(DEC + 2 * HOUR)
    assert (result.finalized, result.failed, result.finance_unrecorded) == (1, {}, 1)
    (invoice,) = billing.all()
    assert invoice.status == "finalized"  # the store is the truth
    # The next run finds the history behind the store and writes the invoice's state again.
    assert billing.run(DEC + 3 * HOUR).finance_restored == 1
    (row,) = adapters.warehouse._query("SELECT version, status, number FROM invoices_latest")
    assert (row["version"], row["status"], row["number"]) == (invoice.version, "finalized", invoice.number)
    assert billing.run(DEC + 4 * HOUR).finance_restored == 0


def _periods_rated(billing: Billing, as_of: datetime, **kwargs) -> list:
    """The periods whose usage a run reads (through a recording usage service)."""
    seen = []

    class Recording(UsageService):
        def rate(self, items, *args):
            seen.extend(period.start_date for _, period in items)
            return super().rate(items, *args)

    adapters = billing.runtime.adapters
    BillingService(adapters.catalog, Recording(adapters.catalog, adapters.warehouse), billing.invoices,
                   adapters.warehouse, **kwargs).run(as_of)
    return sorted(set(seen))


def test_a_finalized_period_is_read_again_only_when_events_arrived_for_it(billing):
    assert _periods_rated(billing, DEC + 2 * HOUR) == [NOV.date()]  # drafted and finalized
    (november,) = billing.all()
    assert november.usage_read_at is not None
    # Nothing new: its events are not read again. (No margin here: the fixture's events were
    # processed seconds before the read, well inside the real one.)
    assert _periods_rated(billing, DEC + 3 * HOUR, arrival_margin_us=0) == []

    # A late event whose insert was still running when November's usage was read: stamped
    # processed a minute before that read, visible only after it.
    late = parse_batch_body(orjson.dumps({"events": [
        tokens("late-1", int((NOV + timedelta(days=20)).timestamp()), 1_000_000, "output")]}), now_us())
    billing.runtime.adapters.warehouse.insert_events(late, to_us(november.usage_read_at) - 60_000_000)
    assert _periods_rated(billing, DEC + 4 * HOUR, arrival_margin_us=0) == []  # what the margin is for
    assert _periods_rated(billing, DEC + 4 * HOUR) == [NOV.date()]
    assert _periods_rated(billing, JAN + 2 * HOUR) == [NOV.date(), DEC.date()]
    december = {i.period_start: i for i in billing.all()}[DEC.date()]
    assert [line.amount_cents for line in december.lines if line.kind == "late_usage"] == [1250]


def test_a_late_seat_added_before_a_finalized_period_is_billed_as_its_late_usage(billing):
    # No arrival margin: the fixture's events were processed seconds before the reads.
    billing.service(arrival_margin_us=0).run(DEC + 2 * HOUR)  # November finalized
    assert _periods_rated(billing, DEC + 3 * HOUR, arrival_margin_us=0) == []
    # A seat added in October, reaching us only now: it was in use all November.
    billing.post([seat("late-seat", int((NOV - timedelta(days=10)).timestamp()), "carol")])
    assert _periods_rated(billing, DEC + 3 * HOUR, arrival_margin_us=0) == [NOV.date()]  # though timed before November
    billing.service(arrival_margin_us=0).run(JAN + 2 * HOUR)
    december = {i.period_start: i for i in billing.all()}[DEC.date()]
    (late,) = [line for line in december.lines if line.kind == "late_usage"]
    assert late.charge_ref == "seats" and late.amount_cents == 2000  # a whole month of one seat


def test_a_scheduled_downgrade_takes_effect_at_the_period_boundary(billing):
    solo = billing.plan.model_copy(update={"code": "solo", "name": "Solo", "amount_cents": 900, "charges": ()})
    billing.runtime.adapters.catalog.put_plan(solo)
    with_clock = billing.admin.__class__(billing.runtime.adapters.catalog, clock=lambda: NOV + timedelta(days=10))
    with_clock.create_subscription({"external_id": "sub_acme", "external_customer_id": "acme", "plan_code": "solo"})
    billing.run(JAN + 2 * HOUR)
    invoices = {i.period_start: i for i in billing.all()}
    assert amounts(invoices[NOV.date()]) == EXPECTED  # November on the old plan, in full
    december = invoices[DEC.date()]
    assert {line.plan_code for line in december.lines} == {"solo"}
    assert december.amount_cents == 900  # the new plan's base fee, no usage charges


def _in_advance(billing: Billing, code: str, amount_cents: int):
    plan = billing.plan.model_copy(update={"code": code, "name": code, "amount_cents": amount_cents,
                                           "pay_in_advance": True, "charges": ()})
    billing.runtime.adapters.catalog.put_plan(plan)
    return plan


def test_a_plan_paid_in_advance_bills_its_first_period_as_it_starts(billing):
    _in_advance(billing, "ahead", 3000)
    billing.admin.upsert_customer({"external_id": "initech", "currency": "USD", "timezone": "UTC"})
    billing.admin.create_subscription({"external_id": "sub_initech", "external_customer_id": "initech",
                                       "plan_code": "ahead", "subscription_at": "2026-11-16T00:00:00Z"})
    for _ in range(2):  # a rerun makes nothing twice
        billing.run(NOV + timedelta(days=15, hours=6))
    (starting,) = [i for i in billing.all() if i.subscription_external_id == "sub_initech"]
    assert (starting.kind, starting.status, starting.issuing_date) == ("starting", "finalized", date(2026, 11, 16))
    assert (starting.period_start, starting.amount_cents, starting.sequential_id) == (NOV.date(), 1500, 1)  # 15 of 30 days
    for _ in range(2):
        billing.run(DEC + 2 * HOUR)
    mine = sorted((i for i in billing.all() if i.subscription_external_id == "sub_initech"), key=lambda i: i.sequential_id)
    assert [(i.kind, i.period_start, i.amount_cents) for i in mine] == [
        ("starting", NOV.date(), 1500),
        ("periodic", NOV.date(), 3000),  # December's fee, in advance, on November's invoice
    ]
    assert mine[0] == starting


def test_a_downgrade_to_a_plan_paid_in_advance_bills_its_first_period(billing):
    _in_advance(billing, "lite", 900)
    with_clock = billing.admin.__class__(billing.runtime.adapters.catalog, clock=lambda: NOV + timedelta(days=10))
    with_clock.create_subscription({"external_id": "sub_acme", "external_customer_id": "acme", "plan_code": "lite"})
    billing.run(DEC + 2 * HOUR)
    by_kind = {(i.kind, i.period_start): i for i in billing.all()}
    assert amounts(by_kind[("periodic", NOV.date())]) == EXPECTED  # November on the old plan, nothing in advance
    starting = by_kind[("starting", DEC.date())]
    assert {line.plan_code for line in starting.lines} == {"lite"} and starting.amount_cents == 900


def test_an_upgrade_from_a_plan_paid_in_advance_is_not_billed_twice_for_its_period(billing):
    _in_advance(billing, "ahead", 3000)
    _in_advance(billing, "ahead_plus", 6000)
    billing.admin.upsert_customer({"external_id": "initech", "currency": "USD", "timezone": "UTC"})
    billing.admin.create_subscription({"external_id": "sub_initech", "external_customer_id": "initech",
                                       "plan_code": "ahead", "subscription_at": "2026-11-01T00:00:00Z"})
    upgrade = billing.admin.__class__(billing.runtime.adapters.catalog, clock=lambda: NOV + timedelta(days=10))
    upgrade.create_subscription({"external_id": "sub_initech", "external_customer_id": "initech", "plan_code": "ahead_plus"})
    billing.run(DEC + 2 * HOUR)
    mine = [i for i in billing.all() if i.subscription_external_id == "sub_initech"]
    # November was paid in full as it started; the upgrade's rest of November is not billed again.
    assert sorted((i.kind, i.amount_cents) for i in mine) == [("periodic", 6000), ("starting", 3000)]


def test_a_terminated_subscription_gets_its_final_invoice(billing):
    terminate = billing.admin.__class__(billing.runtime.adapters.catalog, clock=lambda: DEC + timedelta(days=15))
    billing.run(DEC + 2 * HOUR)
    terminate.terminate_subscription("sub_acme")
    billing.run(DEC + timedelta(days=15, hours=2))
    december = {i.period_start: i for i in billing.all()}[DEC.date()]
    assert december.status == "finalized"
    base = [line for line in december.lines if line.kind == "subscription"][0]
    assert base.amount_cents == round(4900 * 15 / 31)  # Dec 1-15 of 31 days, in arrears


def test_a_zero_grace_period_finalizes_at_the_period_end(tmp_path):
    billing = Billing(tmp_path, {"billing_configuration": {"invoice_grace_period": 0}})
    billing.run(DEC)
    (invoice,) = billing.all()
    assert invoice.status == "finalized"


def test_one_subscription_that_cannot_be_billed_does_not_block_the_others(billing):
    billing.admin.upsert_customer({"external_id": "globex", "currency": "USD"})
    billing.admin.create_subscription({"external_id": "sub_globex", "external_customer_id": "globex",
                                       "plan_code": billing.plan.code, "subscription_at": "2026-11-01T00:00:00Z"})
    broken = billing.plan.model_copy(update={"code": "gone"})
    store = billing.runtime.adapters.catalog
    history = store.get_subscription_history("sub_globex")
    store.put_subscription_history("sub_globex", [history.records[0].model_copy(update={"plan_code": "gone"})],
                                   version=history.version)
    assert broken  # the plan "gone" is not in the catalog
    result = billing.run(DEC + 2 * HOUR)
    assert set(result.failed) == {"sub_globex"}
    (invoice,) = billing.all()
    assert invoice.subscription_external_id == "sub_acme" and invoice.status == "finalized"


def test_a_subscription_whose_usage_cannot_be_read_is_flagged_and_the_others_billed(billing):
    billing.admin.upsert_customer({"external_id": "globex", "currency": "USD"})
    billing.admin.create_subscription({"external_id": "sub_globex", "external_customer_id": "globex",
                                       "plan_code": billing.plan.code, "subscription_at": "2026-11-01T00:00:00Z"})
    warehouse = billing.runtime.adapters.warehouse

    class Refusing:
        """The real warehouse, except that any read covering globex fails (its data broke the query)."""

        def __getattr__(self, name):
            return getattr(warehouse, name)

        def usage_rows(self, query, windows):
            if any(w.external_subscription_id == "sub_globex" for w in windows):
                raise ValueError("Overflow in HUGEINT addition")
            return warehouse.usage_rows(query, windows)

    adapters = billing.runtime.adapters
    service = BillingService(adapters.catalog, UsageService(adapters.catalog, Refusing()), billing.invoices, warehouse)
    result = service.run(DEC + 2 * HOUR)
    assert set(result.failed) == {"sub_globex"}
    (invoice,) = billing.all()
    assert invoice.subscription_external_id == "sub_acme" and amounts(invoice) == EXPECTED
