"""Finance reports: which exist, what each answers, its columns, and the month it is asked for.

Each report is one query in BigQuery's dialect (`adapters/sql/reports/<name>.sql`) that both
warehouses run (DuckDB through sqlglot). A monthly report takes two TIMESTAMP parameters,
`@month_start` and `@month_end`: the month asked, [start, end) in UTC; the others take none.
The columns listed here are the query's, in its order; `Column.kind` says how to read and show
each value (cents are integers in minor units, named with the row's `currency` column).
Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from meterline.core.errors import NotFound, ValidationFailed

ColumnKind = Literal["text", "int", "cents", "decimal", "date", "timestamp", "list"]


class Column(NamedTuple):
    name: str
    kind: ColumnKind = "text"


@dataclass(frozen=True)
class Report:
    name: str
    description: str  # one line, for `meterline report --list`
    columns: tuple[Column, ...]
    monthly: bool = True

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _cols(spec: str) -> tuple[Column, ...]:
    """'name:kind name ...' (kind defaults to text): the registry stays one line a report."""
    return tuple(Column(*part.split(":")) if ":" in part else Column(part) for part in spec.split())  # type: ignore[arg-type]


REPORTS: dict[str, Report] = {r.name: r for r in (
    Report("usage", "Usage by customer, subscription, metric, filter values and day, from the deduplicated events",
           _cols("day:date external_customer_id external_subscription_id code filters events:int units:decimal")),
    Report("revenue", "Invoiced revenue of the invoices issued in the month, by customer and plan, split by fee kind",
           _cols("month external_customer_id plan_code currency invoices:int base_fee_cents:cents "
                 "recurring_charges_cents:cents usage_cents:cents minimum_commitment_cents:cents late_usage_cents:cents "
                 "credits_applied_cents:cents credit_notes_cents:cents total_amount_cents:cents")),
    Report("mrr", "Monthly recurring revenue by customer and its movement from the month before",
           _cols("month external_customer_id currency mrr_cents:cents previous_mrr_cents:cents "
                 "movement change_cents:cents")),
    Report("receivables", "Invoices issued in the month: open, overdue or paid, with Stripe status and days outstanding",
           _cols("invoice_number invoice_id external_customer_id external_subscription_id issuing_date:date "
                 "due_date:date status payment_status provider_invoice_id currency total_amount_cents:cents "
                 "collected_cents:cents state days_outstanding:int")),
    Report("reconciliation", "Each invoice of the month: billed units against the warehouse's, our total against Stripe's, flags",
           _cols("invoice_number invoice_id external_customer_id external_subscription_id currency status "
                 "provider_invoice_id provider_status billed_units:decimal warehouse_units:decimal "
                 "our_total_cents:cents provider_total_cents:cents collected_cents:cents flags:list "
                 "late_usage_invoices:list")),
    Report("credits", "The credit ledger and each customer's balance (empty until wallets exist)",
           _cols("external_customer_id wallet_id entry_at:timestamp kind currency amount_cents:cents "
                 "balance_cents:cents invoice_id"), monthly=False),
    Report("rejected", "Events rejected in the month (a conflicting payload, an unknown metric...) and why",
           _cols("rejected_at:timestamp external_subscription_id transaction_id code timestamp:timestamp reason "
                 "properties")),
    Report("unbilled", "Events of the month that no invoice will carry: unknown subscription or outside its periods",
           _cols("external_subscription_id code reason events:int units:decimal first_event_at:timestamp "
                 "last_event_at:timestamp")),
)}


class UnknownReport(NotFound):
    """A report name the registry does not know (Lago's 404 shape at the HTTP edge)."""

    def __init__(self, name: str):
        super().__init__("report")
        self.name = name
        self.args = (f"no report named {name!r}; the reports are: {', '.join(sorted(REPORTS))}",)


def get(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise UnknownReport(name) from None


class Month(NamedTuple):
    """A calendar month in UTC: [start, end)."""

    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start.year:04d}-{self.start.month:02d}"

    def params(self) -> dict[str, datetime]:
        return {"month_start": self.start, "month_end": self.end}


def month_of(day: date) -> Month:
    start = datetime(day.year, day.month, 1, tzinfo=UTC)
    end = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
    return Month(start, end)


_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: str) -> Month:
    """`YYYY-MM`; anything else is refused naming the field `month`."""
    match = _MONTH.fullmatch(text.strip())
    if not match or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1:
        raise ValidationFailed({"month": ["invalid_format"]}, f"month must be YYYY-MM, not {text!r}")
    return month_of(date(int(match[1]), int(match[2]), 1))


def _value(kind: ColumnKind, value: Any) -> Any:
    """One value as the registry types it, whichever engine returned it (BigQuery's client and
    DuckDB differ in ints read as Decimal, naive or aware timestamps, JSON lists as text)."""
    if value is None:
        return [] if kind == "list" else None
    if kind in ("int", "cents"):
        return int(value)
    if kind == "decimal":
        return Decimal(value).normalize() if Decimal(value) != 0 else Decimal(0)
    if kind == "timestamp":
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if kind == "date":
        if isinstance(value, datetime):
            return value.date()
        return date.fromisoformat(value) if isinstance(value, str) else value
    if kind == "list":
        return sorted(str(v) for v in value)
    return str(value)


def typed_rows(report: Report, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The query's rows, checked against the registry's columns and typed by them."""
    out = []
    for row in rows:
        if tuple(row) != report.column_names:
            raise RuntimeError(f"report {report.name}: the query's columns {tuple(row)} are not the registry's")
        out.append({c.name: _value(c.kind, row[c.name]) for c in report.columns})
    return out
