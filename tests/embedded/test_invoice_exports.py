"""Finance's invoice export (`local/exports.py`): November of the billing harness, with a third
seat added on November 11 (20 of 30 days), so that the seat line is prorated to a repeating
decimal. Every row is the hand-computed one."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from meterline.core.invoices import invoice_id
from meterline.local import exports
from meterline.services.invoices import InvoicesService
from tests.harness.billing import DEC, HOUR, Billing
from tests.harness.november import DAY, T, seat

ID = invoice_id("sub_acme", date(2026, 11, 1), date(2026, 11, 30))
NUMBER = "ML-822B33AD-0001"

INVOICE = {
    "invoice_id": ID, "invoice_number": NUMBER, "external_customer_id": "acme", "external_subscription_id": "sub_acme",
    "status": "finalized", "issue_date": "2026-12-01", "due_date": "2026-12-01",
    "period_start": "2026-11-01", "period_end": "2026-11-30", "currency": "USD",
    # 49.00 base + 43.33 seats + 12.00 + 175.00 + 3.00 tokens
    "subtotal": "282.33", "subtotal_cents": "28233", "credits": "0.00", "credits_cents": "0",
    "total": "282.33", "total_cents": "28233",
}
# (kind, description, units, units_exact, unit_price, unit_price_exact, amount, amount_cents, precise_amount)
LINES = [
    ("subscription", "Team (monthly)", "1 month", "1", "49.00", "49", "49.00", "4900", "49"),
    # alice 30 + bob 15 + carol 20 seat-days over 30 days: 65/30 seats at 20.00
    ("charge", "Seats ([0–∞] ≈2.166667 × 20)", "2.17 seats (prorated by day)",
     "2.1666666666666666666666666666666666666666666666667", "20.00", "20", "43.33", "4333",
     "43.333333333333333333333333333333333333333333333334"),
    ("charge", "Input tokens ([0–10000000] 4000000 × 0.000003)", "4,000,000 tokens consumed", "4000000",
     "0.000003", "0.000003", "12.00", "1200", "12"),
    # 175.00 over 12M tokens: the average of the two tiers the description lists
    ("charge", "Output tokens ([0–10000000] 10000000 × 0.000015; [10000001–∞] 2000000 × ≈0.000013)",
     "12,000,000 tokens consumed", "12000000", "0.00001458", "0.000014583333333333333333333333333333333333333333333333",
     "175.00", "17500", "175"),
    ("charge", "Tokens ([0–10000000] 1000000 × 0.000003)", "1,000,000 tokens consumed", "1000000",
     "0.000003", "0.000003", "3.00", "300", "3"),
]
LINE_ROWS = [
    {"invoice_id": ID, "invoice_number": NUMBER, "external_subscription_id": "sub_acme", "currency": "USD",
     **dict(zip(("kind", "description", "units", "units_exact", "unit_price", "unit_price_exact",
                 "amount", "amount_cents", "precise_amount"), line, strict=True))}
    for line in LINES
]


@pytest.fixture
def november(tmp_path):
    billing = Billing(tmp_path)
    billing.post([seat("s3", T + 10 * DAY, "carol")])  # November 11: 20 of 30 days
    billing.run(DEC + 2 * HOUR)
    return InvoicesService(billing.invoices, billing.runtime.adapters.catalog).details(billing.all())


def read_csv(path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def test_csv_export_is_the_hand_computed_rows(november, tmp_path):
    written = exports.write(november, tmp_path / "nov.csv")
    assert written == [tmp_path / "nov.csv", tmp_path / "nov_lines.csv"]
    assert read_csv(written[0]) == [INVOICE]
    assert read_csv(written[1]) == LINE_ROWS
    assert list(read_csv(written[1])[0]) == exports.LINE_COLUMNS


def test_json_export_keeps_money_as_decimal_text_and_cents_as_integers(november, tmp_path):
    invoices_file, lines_file = exports.write(november, tmp_path / "nov.json")
    (invoice,) = orjson.loads(invoices_file.read_bytes())
    cents = {k for k in INVOICE if k.endswith("_cents")}
    assert invoice == {k: int(v) if k in cents else v for k, v in INVOICE.items()}
    lines = orjson.loads(lines_file.read_bytes())
    assert lines == [{k: int(v) if k == "amount_cents" else v for k, v in row.items()} for row in LINE_ROWS]
    # No float anywhere: every amount parses back exactly, and the lines add up to the total.
    assert sum(Decimal(line["amount"]) for line in lines) == Decimal(invoice["total"])
    assert sum(line["amount_cents"] for line in lines) == invoice["total_cents"]


def test_a_send_invoice_customer_is_due_after_its_net_term(tmp_path):
    billing = Billing(tmp_path, customer={"net_payment_term": 30,
                                          "billing_configuration": {"collection_method": "send_invoice"}})
    billing.run(DEC + 2 * HOUR)
    (invoice,) = billing.all()
    assert (invoice.issuing_date.isoformat(), invoice.due_date.isoformat()) == ("2026-12-01", "2026-12-31")


def test_an_export_file_is_csv_or_json():
    assert exports.export_format(exports.lines_path(Path("a/b.JSON"))) == "json"
    with pytest.raises(ValueError, match="a .csv or a .json file"):
        exports.export_format(Path("invoices.xlsx"))
