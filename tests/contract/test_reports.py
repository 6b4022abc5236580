"""Every finance report (core/reports.py), on DuckDB and on bqemulator, over the same two billed
months seeded through the real services: the same rows on both engines, equal to the figures
worked out by hand below.

The months (example catalog: 49 USD base fee in arrears, 20 USD a seat prorated by day, tokens
graduated: input 0.000003, output 0.000015 up to 10M), every customer in UTC:

  September 2025 (30 days), issued 2025-10-01
    acme  (charged automatically: due on issue)   base 4900, seats 3000 (alice all month 2000,
          bob from the 16th: 15/30 x 2000 = 1000), input 4M = 1200, output 2M = 3000 -> 12100;
          paid on 2025-10-03 (a webhook)
    beta  (send_invoice, net 15: due 2025-10-16)  base 4900, input 2M = 600 -> 5500; never paid
  October 2025 (31 days), issued 2025-11-01
    acme  base 4900, seats 4000 (both all month), input 1M = 300, and the late usage of
          September: 1M output that arrived after September was finalized, 1M x 0.000015 = 1500
          -> 10700
    beta  base 4900 -> 4900
  Not billed: 500 tokens on `sub_ghost` (no such subscription) on 2025-09-12, and alice's seat
  added on 2025-08-20, before acme's first period. Rejected: acme's `a-in-1` sent again with
  another value (rejected when processed: in the month the test runs).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from meterline.core import reports
from meterline.core.clock import now_us
from meterline.core.errors import ValidationFailed
from meterline.ports import PaymentEvent
from meterline.services.payments import PaymentEvents
from tests.harness.backends import bigquery_warehouse
from tests.harness.billing import HOUR, Billing

SEP, OCT, NOV = (datetime(2025, m, 1, tzinfo=UTC) for m in (9, 10, 11))
DAY = timedelta(days=1)


def ts(at: datetime) -> int:
    return int(at.timestamp())


def tokens(tx: str, sub: str, at: datetime, value, token_type: str) -> dict:
    return {"transaction_id": tx, "external_subscription_id": sub, "code": "tokens_consumed", "timestamp": ts(at),
            "properties": {"value": value, "model": "gpt-4o", "token_type": token_type}}


def seat(tx: str, at: datetime, user: str) -> dict:
    return {"transaction_id": tx, "external_subscription_id": "sub_acme", "code": "seats", "timestamp": ts(at),
            "properties": {"user_id": user, "operation_type": "add"}}


ACME_EVENTS = [
    seat("a-seat-1", datetime(2025, 8, 20, tzinfo=UTC), "alice"),
    seat("a-seat-2", SEP + 15 * DAY, "bob"),
    tokens("a-in-1", "sub_acme", SEP + DAY, 4_000_000, "input"),
    tokens("a-out-1", "sub_acme", SEP + 2 * DAY, "2000000", "output"),  # numeric text counts too
    tokens("a-in-2", "sub_acme", OCT + 4 * DAY, 1_000_000, "input"),
    tokens("ghost-1", "sub_ghost", SEP + 11 * DAY, 500, "input"),
]
BETA_EVENTS = [tokens("b-in-1", "sub_beta", SEP + 9 * DAY, 2_000_000, "input")]
LATE = tokens("a-out-late", "sub_acme", SEP + 20 * DAY, 1_000_000, "output")
CONFLICT = tokens("a-in-1", "sub_acme", SEP + DAY, 9_999, "input")  # same key, another payload
PAID_AT = datetime(2025, 10, 3, 9, tzinfo=UTC)


class Seeded:
    def __init__(self, tmp_path, warehouse):
        self.billing = b = Billing(tmp_path, warehouse=warehouse, since="2025-09-01T00:00:00Z", events=ACME_EVENTS)
        b.admin.upsert_customer({"external_id": "beta", "name": "Beta", "currency": "USD", "timezone": "UTC",
                                 "net_payment_term": 15,
                                 "billing_configuration": {"collection_method": "send_invoice"}})
        b.admin.create_subscription({"external_id": "sub_beta", "external_customer_id": "beta",
                                     "plan_code": b.plan.code, "subscription_at": "2025-09-01T00:00:00Z"})
        b.post(BETA_EVENTS)
        b.run(OCT + 2 * HOUR)  # September finalized (past the one-hour grace)
        self.sep = {i.customer_external_id: i for i in b.all()}
        adapters = b.runtime.adapters
        PaymentEvents(b.invoices, adapters.processed_events, adapters.warehouse).handle(PaymentEvent(
            id="evt_paid_1", type="invoice.paid", occurred_at=PAID_AT, moves_to="paid",
            invoice_id=self.sep["acme"].id, amount_cents=12100, currency="USD"))
        self.rejected_from = now_us()
        b.post([LATE, CONFLICT])
        self.rejected_to = now_us()
        b.run(NOV + 2 * HOUR)  # October finalized, with September's late usage
        self.oct = {i.customer_external_id: i for i in b.all() if i.period_start == OCT.date()}
        self.warehouse = adapters.warehouse

    def report(self, name: str, month: str | None = None) -> list[dict]:
        return self.warehouse.report(name, reports.parse_month(month) if month else None)


@pytest.fixture(scope="module", params=["duckdb", pytest.param("bigquery", marks=pytest.mark.servers)])
def seeded(request, tmp_path_factory) -> Seeded:
    warehouse = None
    if request.param == "bigquery":
        warehouse = bigquery_warehouse(request.getfixturevalue("bigquery_emulator"))
    return Seeded(tmp_path_factory.mktemp(request.param), warehouse)


def test_the_seed_billed_what_the_months_say(seeded):
    # The invoices themselves, so that a report's figure is checked against a real bill.
    assert {c: i.amount_cents for c, i in seeded.sep.items()} == {"acme": 12100, "beta": 5500}
    assert {c: i.amount_cents for c, i in seeded.oct.items()} == {"acme": 10700, "beta": 4900}
    # The seat charge's lines say their metric recurs; the base fee's and the tokens' do not.
    assert {(line.charge_ref, line.recurring) for line in seeded.sep["acme"].lines} == {
        (None, False), ("seats", True), ("tokens_consumed", False)}
    assert [line.amount_cents for line in seeded.oct["acme"].lines if line.kind == "late_usage"] == [1500]


def test_usage_by_day_customer_subscription_metric_and_filters(seeded):
    def row(day, customer, sub, code, filters, events, units):
        return {"day": day, "external_customer_id": customer, "external_subscription_id": sub, "code": code,
                "filters": filters, "events": events, "units": Decimal(units)}

    gpt_in = '{"model":"gpt-4o","token_type":"input"}'
    gpt_out = '{"model":"gpt-4o","token_type":"output"}'
    assert seeded.report("usage", "2025-09") == [
        row(date(2025, 9, 2), "acme", "sub_acme", "tokens_consumed", gpt_in, 1, 4_000_000),  # not the conflict's 9,999
        row(date(2025, 9, 3), "acme", "sub_acme", "tokens_consumed", gpt_out, 1, 2_000_000),
        row(date(2025, 9, 10), "beta", "sub_beta", "tokens_consumed", gpt_in, 1, 2_000_000),
        row(date(2025, 9, 12), None, "sub_ghost", "tokens_consumed", gpt_in, 1, 500),  # never invoiced: no customer
        row(date(2025, 9, 16), "acme", "sub_acme", "seats", '{"user_id":"bob","operation_type":"add"}', 1, 0),
        row(date(2025, 9, 21), "acme", "sub_acme", "tokens_consumed", gpt_out, 1, 1_000_000),  # the late one
    ]
    assert seeded.report("usage", "2025-10") == [
        row(date(2025, 10, 5), "acme", "sub_acme", "tokens_consumed", gpt_in, 1, 1_000_000),
    ]


def test_revenue_by_issue_month_customer_and_plan(seeded):
    def row(month, customer, invoices, base, seats, usage, late, total):
        return {"month": month, "external_customer_id": customer, "plan_code": "team_monthly", "currency": "USD",
                "invoices": invoices, "base_fee_cents": base, "recurring_charges_cents": seats,
                "usage_cents": usage, "minimum_commitment_cents": 0, "late_usage_cents": late,
                "credits_applied_cents": 0, "credit_notes_cents": 0, "total_amount_cents": total}

    assert seeded.report("revenue", "2025-09") == []  # nothing issued in September
    # Seats (a recurring metric) apart from the tokens (usage); every column adds up to the total.
    assert seeded.report("revenue", "2025-10") == [
        row("2025-10", "acme", 1, 4900, 3000, 1200 + 3000, 0, 12100),
        row("2025-10", "beta", 1, 4900, 0, 600, 0, 5500),
    ]
    assert seeded.report("revenue", "2025-11") == [
        row("2025-11", "acme", 1, 4900, 4000, 300, 1500, 10700),
        row("2025-11", "beta", 1, 4900, 0, 0, 0, 4900),
    ]


def test_mrr_and_its_movement(seeded):
    def row(month, customer, mrr, previous, movement):
        return {"month": month, "external_customer_id": customer, "currency": "USD", "mrr_cents": mrr,
                "previous_mrr_cents": previous, "movement": movement, "change_cents": mrr - previous}

    # MRR: the base fee and the seats (recurring), not the tokens nor the late usage.
    assert seeded.report("mrr", "2025-10") == [
        row("2025-10", "acme", 4900 + 3000, 0, "new"), row("2025-10", "beta", 4900, 0, "new"),
    ]
    # acme's bob had a seat for half of September and all of October: 1000 more.
    assert seeded.report("mrr", "2025-11") == [
        row("2025-11", "acme", 4900 + 4000, 4900 + 3000, "expansion"), row("2025-11", "beta", 4900, 4900, "unchanged"),
    ]
    # December has no invoice yet (November's period is not billed): both churn, as of the data.
    assert seeded.report("mrr", "2025-12") == [
        row("2025-12", "acme", 0, 4900 + 4000, "churn"), row("2025-12", "beta", 0, 4900, "churn"),
    ]


def test_receivables_paid_and_overdue(seeded):
    acme, beta = seeded.sep["acme"], seeded.sep["beta"]
    common = {"issuing_date": date(2025, 10, 1), "currency": "USD", "provider_invoice_id": None}
    assert seeded.report("receivables", "2025-10") == sorted([
        {"invoice_number": acme.number, "invoice_id": acme.id, "external_customer_id": "acme",
         "external_subscription_id": "sub_acme", **common, "due_date": date(2025, 10, 1), "status": "paid",
         "payment_status": "succeeded", "total_amount_cents": 12100, "collected_cents": 12100, "state": "paid",
         "days_outstanding": 2},  # issued Oct 1, paid Oct 3
        {"invoice_number": beta.number, "invoice_id": beta.id, "external_customer_id": "beta",
         "external_subscription_id": "sub_beta", **common, "due_date": date(2025, 10, 16), "status": "finalized",
         "payment_status": "pending", "total_amount_cents": 5500, "collected_cents": 0, "state": "overdue",
         "days_outstanding": 31},  # as of the month's end, Nov 1: 31 days, due since Oct 16
    ], key=lambda r: r["invoice_number"])
    # The next month's report: October's invoices, open or overdue as of December 1.
    rows = seeded.report("receivables", "2025-11")
    assert [(r["external_customer_id"], r["total_amount_cents"], r["due_date"], r["state"], r["days_outstanding"])
            for r in rows] == [("acme", 10700, date(2025, 11, 1), "overdue", 30), ("beta", 4900, date(2025, 11, 16), "overdue", 30)]


def test_credits_has_its_columns_and_no_rows_until_wallets_exist(seeded):
    assert seeded.report("credits") == []


def test_rejected_names_the_conflicting_event(seeded):
    month = reports.month_of(datetime.fromtimestamp(seeded.rejected_to / 1e6, UTC).date())
    rows = seeded.warehouse.report("rejected", month)
    assert len(rows) == 1
    (row,) = rows
    assert seeded.rejected_from <= int(row.pop("rejected_at").timestamp() * 1e6) <= seeded.rejected_to + 1_000_000
    assert row == {"external_subscription_id": "sub_acme", "transaction_id": "a-in-1", "code": "tokens_consumed",
                   "timestamp": SEP + DAY, "reason": "transaction_id_reused_with_different_payload",
                   "properties": '{"value":9999,"model":"gpt-4o","token_type":"input"}'}
    assert seeded.report("rejected", "2025-09") == []  # by when it was rejected, not by the event's time


def test_unbilled_unknown_subscription_and_outside_every_period(seeded):
    assert seeded.report("unbilled", "2025-09") == [
        {"external_subscription_id": "sub_ghost", "code": "tokens_consumed", "reason": "no_subscription",
         "events": 1, "units": Decimal(500), "first_event_at": SEP + 11 * DAY, "last_event_at": SEP + 11 * DAY},
    ]
    aug20 = datetime(2025, 8, 20, tzinfo=UTC)
    assert seeded.report("unbilled", "2025-08") == [
        {"external_subscription_id": "sub_acme", "code": "seats", "reason": "outside_periods",
         "events": 1, "units": Decimal(0), "first_event_at": aug20, "last_event_at": aug20},
    ]
    assert seeded.report("unbilled", "2025-10") == []  # October is billed, late usage and all


def test_a_monthly_report_needs_a_month_and_an_unknown_name_is_refused(seeded):
    with pytest.raises(ValidationFailed):
        seeded.warehouse.report("revenue")
    with pytest.raises(reports.UnknownReport):
        seeded.warehouse.report("nope", reports.parse_month("2025-10"))
