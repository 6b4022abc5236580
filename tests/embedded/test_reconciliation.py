"""The reconciliation report as `meterline serve` answers it (the bill runtime's `reports`, behind
`GET /api/v1/reports/reconciliation`), embedded and without a payment provider: the warehouse's
units per usage line are there, and an invoice never sent to a provider is not flagged."""

from __future__ import annotations

from decimal import Decimal

from meterline.core.reports import parse_month
from tests.harness.billing import DEC, HOUR, Billing
from tests.harness.november import T, tokens


def test_serve_s_reconciliation_has_the_warehouse_units_and_flags_late_usage(tmp_path):
    billing = Billing(tmp_path)
    billing.run(DEC + 2 * HOUR)  # no Stripe: finalized locally
    (invoice,) = billing.all()
    billed = sum((line.units for line in invoice.lines if line.kind == "charge"), Decimal(0))
    reports = billing.runtime.bill.reports
    (row,) = reports.report("reconciliation", parse_month("2026-12"))
    assert (row["invoice_number"], row["status"], row["provider_invoice_id"]) == (invoice.number, "finalized", None)
    assert row["billed_units"] == row["warehouse_units"] == billed.normalize()
    assert row["flags"] == [] and row["our_total_cents"] == 26900 and row["provider_total_cents"] is None

    billing.post([tokens("late-1", T + 3 * 86_400, 250_000, "output")])  # November's, arriving late
    (row,) = reports.report("reconciliation", parse_month("2026-12"))
    assert row["flags"] == ["late_usage"] and row["warehouse_units"] - row["billed_units"] == 250_000
    assert reports.report("usage", parse_month("2026-11"))  # the other reports pass through
