"""The invoice export finance imports: one row per invoice and one row per invoice line.

The only place the export's shape is made; `meterline bill --output` and `meterline demo` both
write it, as CSV (through `output.render`, so its CSV escaping applies) or JSON. Its rules:

- Money is Decimal text in major units (`269.00`) beside integer minor units (`26900`), never a
  float, and the currency has its own column.
- What a reader sees and the exact figures are separate columns: `units` is rounded for
  display and says what is counted (`1.67 seats (prorated by day)`), `units_exact` keeps every
  digit (`1.666666666666666666666666667`); the same for `unit_price` and `precise_amount`.
- `credits` is 0 until wallets exist; `total` is `subtotal - credits`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from meterline.core.invoices import InvoiceLine
from meterline.core.money import MONEY_CONTEXT, currency_exponent, from_minor_units, money_context
from meterline.local import output
from meterline.services.invoices import InvoiceDetails

__all__ = ["INVOICE_COLUMNS", "LINE_COLUMNS", "export_format", "invoice_rows", "line_rows", "lines_path", "write"]

INVOICE_COLUMNS = [
    "invoice_id", "invoice_number", "external_customer_id", "external_subscription_id", "status",
    "issue_date", "due_date", "period_start", "period_end", "currency",
    "subtotal", "subtotal_cents", "credits", "credits_cents", "total", "total_cents",
]
LINE_COLUMNS = [
    "invoice_id", "invoice_number", "external_subscription_id", "kind", "description",
    "units", "units_exact", "unit_price", "unit_price_exact", "currency",
    "amount", "amount_cents", "precise_amount",
]

# A base fee's units are the share of its billing interval that it bills.
_INTERVAL_UNIT = {"weekly": "week", "monthly": "month", "quarterly": "quarter", "semiannual": "half-year",
                  "yearly": "year"}
_TWO_PLACES = Decimal("0.01")
_PRICE_DIGITS = 4  # significant digits of a unit price as shown (the exact one has its column)


def invoice_rows(invoices: Sequence[InvoiceDetails]) -> list[dict[str, Any]]:
    rows = []
    for details in invoices:
        inv = details.invoice
        credits_cents = 0  # NOTE: no wallets or credit notes yet; their ledger will feed this
        rows.append({
            "invoice_id": inv.id, "invoice_number": inv.number,
            "external_customer_id": inv.customer_external_id, "external_subscription_id": inv.subscription_external_id,
            "status": inv.status, "issue_date": inv.issuing_date.isoformat(), "due_date": inv.due_date.isoformat(),
            "period_start": inv.period_start.isoformat(), "period_end": inv.period_end.isoformat(),
            "currency": inv.currency,
            **_money("subtotal", inv.amount_cents, inv.currency),
            **_money("credits", credits_cents, inv.currency),
            **_money("total", inv.amount_cents - credits_cents, inv.currency),
        })
    return rows


def line_rows(invoices: Sequence[InvoiceDetails]) -> list[dict[str, Any]]:
    rows = []
    for details in invoices:
        inv = details.invoice
        for line in inv.lines:
            price = _unit_price(line)
            rows.append({
                "invoice_id": inv.id, "invoice_number": inv.number,
                "external_subscription_id": inv.subscription_external_id,
                "kind": line.kind, "description": line.description,
                "units": _units_shown(details, line), "units_exact": _plain(line.units),
                "unit_price": _price_shown(price, inv.currency) if price is not None else None,
                "unit_price_exact": _plain(price) if price is not None else None,
                "currency": inv.currency,
                **_money("amount", line.amount_cents, inv.currency),
                "precise_amount": _plain(line.precise_amount),
            })
    return rows


def export_format(path: Path) -> str:
    """The format of an export file, by its suffix: `.json` or `.csv` (anything else is refused)."""
    fmt = path.suffix.lower().removeprefix(".")
    if fmt not in ("csv", "json"):
        raise ValueError(f"{path}: an invoice export is a .csv or a .json file")
    return fmt


def lines_path(path: Path) -> Path:
    """Where the lines go beside the invoices file: `invoices.csv` -> `invoices_lines.csv`."""
    return path.with_name(f"{path.stem}_lines{path.suffix}")


def write(invoices: Sequence[InvoiceDetails], path: Path) -> list[Path]:
    """The invoices to `path` and their lines beside it (`lines_path`), in `path`'s format."""
    fmt = export_format(path)
    files = {path: (invoice_rows(invoices), INVOICE_COLUMNS), lines_path(path): (line_rows(invoices), LINE_COLUMNS)}
    for file, (rows, columns) in files.items():
        file.write_text(output.render(rows, columns, fmt) + "\n", encoding="utf-8")
    return list(files)


def _money(name: str, cents: int, currency: str) -> dict[str, Any]:
    return {name: from_minor_units(cents, currency), f"{name}_cents": cents}


def _unit_price(line: InvoiceLine) -> Decimal | None:
    """The line's price per unit: its precise amount over its units (for a tiered charge, the
    average over its tiers, which its description lists); None for a line of no units."""
    if not line.units:
        return None
    with money_context():
        return line.precise_amount / line.units


def _plain(value: Decimal) -> Decimal:
    """`value` exactly, without trailing zeros or an exponent: 175.0000 -> 175, 2E+1 -> 20."""
    return Decimal(format(value.normalize(MONEY_CONTEXT), "f"))


def _price_shown(price: Decimal, currency: str) -> Decimal:
    """A unit price to `_PRICE_DIGITS` significant digits, and at least the currency's decimals:
    20 -> 20.00, 0.0000145833... -> 0.00001458."""
    exponent = currency_exponent(currency)
    places = max(exponent, _PRICE_DIGITS - 1 - price.adjusted()) if price else exponent
    shown = price.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP, MONEY_CONTEXT)
    # Trailing zeros past the currency's decimals say nothing: 0.000003000 -> 0.000003.
    plain = _plain(shown)
    decimals = len(format(plain, "f").partition(".")[2])
    return plain if decimals >= exponent else shown.quantize(Decimal(1).scaleb(-exponent))


def _units_shown(details: InvoiceDetails, line: InvoiceLine) -> str:
    """`1.67 seats (prorated by day)`, `12,000,000 tokens consumed`, `0.5 month (prorated by day)`."""
    units = line.units.quantize(_TWO_PLACES, ROUND_HALF_UP, MONEY_CONTEXT)
    number = f"{units:,.2f}".rstrip("0").rstrip(".") if units != units.to_integral_value() else f"{units:,.0f}"
    word, prorated = _unit_of(details, line)
    text = f"{number} {word}" if word else number
    return f"{text} (prorated by day)" if prorated else text


def _unit_of(details: InvoiceDetails, line: InvoiceLine) -> tuple[str | None, bool]:
    """What a line counts, and whether it is prorated by day (as the catalog says now)."""
    if line.kind == "subscription":
        plan = details.plans.get(line.plan_code) if line.plan_code else None
        # A base fee is prorated by day when it bills part of its interval (a start, an end, a plan change).
        return (_INTERVAL_UNIT.get(plan.interval) if plan is not None else None), line.units != 1
    charge = details.charges.get(line.ref)
    if charge is None:
        return line.charge_ref, False
    code = charge.billable_metric_code
    metric = details.metrics.get(code) if code else None
    # Marked where proration shows: a whole number of seats reads as seats, prorated or not.
    prorated = charge.prorated and line.units != line.units.to_integral_value()
    return (metric.name.lower() if metric is not None else code), prorated
