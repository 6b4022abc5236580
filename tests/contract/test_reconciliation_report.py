"""The `reconciliation` report's query, and `provider_invoices` with its latest view, on DuckDB and
on bqemulator: the same seeded month gives the same rows, equal to the ones computed by hand.

March 2026 (invoices issued in March; the helper's January-style invoice starts a month earlier):

  clean      paid, Stripe's total ours, two payment events for one payment (paid and
             payment_succeeded) and an older pull that saw it open: no flag, collected once
  differs    Stripe's total is not ours, a charge failed, unpaid: three flags
  missing    Stripe never reported it: provider_missing, and unpaid past due
  voided     nothing is checked
  unsent     never sent to a payment provider (none configured): nothing is checked
  draft      not issued: no row
  (April)    a later invoice whose late-usage line adds to `clean`'s line: named on its row
  (February) another month's invoice: no row

`warehouse_units` and the `late_usage` flag need the catalog (services/reconcile.py, tested on
localstripe in tests/e2e/test_reconciliation_stripe.py): the query leaves the units NULL.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse
from meterline.core.clock import to_us
from meterline.core.invoices import Invoice
from meterline.core.reports import parse_month
from meterline.ports import Payment, ProviderObservation, Warehouse
from tests.harness.backends import bigquery_warehouse
from tests.harness.invoices import invoice, line

MARCH = parse_month("2026-03")
FEB = date(2026, 2, 1)  # the period start of an invoice issued on March 1
FINALIZED = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
US = to_us(FINALIZED)


@pytest.fixture(params=["duckdb", pytest.param("bigquery", marks=pytest.mark.servers)])
def warehouse(request, tmp_path) -> Warehouse:
    if request.param == "duckdb":
        from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse

        return DuckDbWarehouse(tmp_path / "w.duckdb")
    return bigquery_warehouse(request.getfixturevalue("bigquery_emulator"))


def issued(sub: str, start: date = FEB, status: str = "finalized", number: str | None = None, **changes) -> Invoice:
    lines = changes.pop("lines", (
        line(f"{sub}|charge|tokens", 1200, units=Decimal("100.5")),
        line(f"{sub}|charge|images", 300, units=Decimal("20"), charge_ref="ch_2"),
        line(f"{sub}|subscription|base", 4900, kind="subscription", filter_key=None, units=Decimal(1)),
    ))
    draft = invoice(sub=sub, customer=f"cus-{sub}", start=start, version=1, lines=lines, **changes)
    if status == "draft":
        return draft
    out = draft.moved("finalized", FINALIZED, number=number or f"ML-{sub}", provider_invoice_id=f"in_{sub}")
    if status != "finalized":
        out = out.moved(status, FINALIZED + timedelta(hours=1))  # type: ignore[arg-type]
    return dataclasses.replace(out, version=2)


def seen(inv: Invoice, status: str, total: int, paid: int, at_us: int, source: str = "webhook",
         event: str | None = None) -> ProviderObservation:
    return ProviderObservation(
        invoice_id=inv.id, customer_external_id=inv.customer_external_id, issuing_date=inv.issuing_date,
        provider_invoice_id=inv.provider_invoice_id or "in_?", status=status, currency=inv.currency, total_cents=total,
        amount_paid_cents=paid, due_at=None, source=source, observed_at_us=at_us,
        provider_event_id=event if source == "webhook" else None)


def seed(warehouse) -> dict[str, Invoice]:
    clean = issued("clean", status="paid")
    differs = issued("differs")
    missing = issued("missing")
    voided = issued("voided", status="voided")
    unsent = dataclasses.replace(issued("unsent"), provider_invoice_id=None)
    draft = issued("draft", status="draft")
    february = issued("feb", start=date(2026, 1, 1))
    late_line = line("later|late|clean|charge|tokens", 150, kind="late_usage", units=Decimal("7"),
                     late_for="clean|charge|tokens")
    april = issued("later", start=date(2026, 3, 1), number="ML-later-0002", lines=(late_line,))
    everything = [clean, differs, missing, voided, unsent, draft, february, april]
    warehouse.record_invoices(everything, US)
    warehouse.record_invoice(clean, US + 5)  # recorded twice (a crash, a rerun): kept once
    total = clean.amount_cents
    warehouse.record_provider_invoices([
        seen(clean, "open", total, 0, US - 10_000_000, source="pull"),  # an older pull
        # finalized and paid within one second: the furthest state wins the tie
        seen(clean, "paid", total, total, US, event="evt_paid"),
        seen(clean, "open", total, 0, US, event="evt_finalized"),
        seen(clean, "paid", total, total, US, event="evt_paid"),  # the same event delivered twice
        seen(differs, "open", differs.amount_cents - 100, 0, US, event="evt_d"),
        seen(voided, "void", voided.amount_cents, 0, US, event="evt_v"),
    ])
    for event in ("evt_p1", "evt_p2"):  # Stripe's paid and payment_succeeded: one payment
        warehouse.record_payment(Payment(clean.id, clean.customer_external_id, event, "succeeded", total, "USD", US))
    warehouse.record_payment(Payment(differs.id, differs.customer_external_id, "evt_f", "failed", differs.amount_cents,
                                     "USD", US))
    return {i.subscription_external_id: i for i in everything}


def row(inv: Invoice, provider_status, provider_total, collected, flags, late=()) -> dict:
    return {
        "invoice_number": inv.number, "invoice_id": inv.id, "external_customer_id": inv.customer_external_id,
        "external_subscription_id": inv.subscription_external_id, "currency": "USD", "status": inv.status,
        "provider_invoice_id": inv.provider_invoice_id, "provider_status": provider_status,
        "billed_units": Decimal("120.5"), "warehouse_units": None, "our_total_cents": 6400,
        "provider_total_cents": provider_total, "collected_cents": collected, "flags": flags,
        "late_usage_invoices": list(late),
    }


def test_the_month_s_invoices_against_stripe_the_same_on_both_engines(warehouse):
    inv = seed(warehouse)
    assert inv["clean"].amount_cents == 6400
    rows = warehouse.report("reconciliation", MARCH)
    assert sorted(rows, key=lambda r: r["invoice_number"]) == [
        row(inv["clean"], "paid", 6400, 6400, [], late=["ML-later-0002"]),
        row(inv["differs"], "open", 6300, 0, ["payment_failed", "provider_total_differs", "unpaid_overdue"]),
        row(inv["missing"], None, None, 0, ["provider_missing", "unpaid_overdue"]),
        row(inv["unsent"], None, None, 0, []),
        row(inv["voided"], "void", 6400, 0, []),
    ]


def test_provider_invoices_latest_is_one_row_per_invoice_in_its_furthest_latest_state(warehouse):
    inv = seed(warehouse)
    rows = warehouse._query("SELECT invoice_id, status, total_cents, amount_paid_cents, source "
                            "FROM provider_invoices_latest ORDER BY invoice_id")
    assert {r["invoice_id"]: (r["status"], r["total_cents"], r["amount_paid_cents"], r["source"]) for r in rows} == {
        inv["clean"].id: ("paid", 6400, 6400, "webhook"),
        inv["differs"].id: ("open", 6300, 0, "webhook"),
        inv["voided"].id: ("void", 6400, 0, "webhook"),
    }
    # A later pull is newer than every webhook: its figures are current.
    warehouse.record_provider_invoices([seen(inv["differs"], "paid", 6300, 6300, US + 1, source="pull")])
    (latest,) = warehouse._query("SELECT status, amount_paid_cents FROM provider_invoices_latest WHERE invoice_id = @id",
                                 {"id": inv["differs"].id})
    assert (latest["status"], latest["amount_paid_cents"]) == ("paid", 6300)
    # The all-months view: DuckDB creates it; on BigQuery it is Terraform's (tests/terraform renders
    # it), and the emulator does not get it (BigQueryWarehouse.ensure_schema says why).
    if isinstance(warehouse, DuckDbWarehouse):
        assert warehouse._query("SELECT COUNT(*) AS n FROM report_reconciliation")[0]["n"] == 7  # drafts left out
