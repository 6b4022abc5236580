"""Finance rows: an invoice as its `invoices` and `invoice_lines` rows, a payment as its
`payments` row, what the provider said of an invoice as a `provider_invoices` row, and the
writes both warehouses share (`FinanceRecords`).

Timestamps travel as ISO-8601 text with microseconds and amounts as decimal text, so no
value passes through a float on its way into either warehouse.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from meterline.core.clock import iso_us, to_us

if TYPE_CHECKING:
    from meterline.core.invoices import Invoice
    from meterline.ports import Payment, ProviderObservation

# Append-only history: every stored version of an invoice is one `invoices` row and one
# `invoice_lines` row per line; the views `invoices_latest` and `invoice_lines_latest` show the
# highest version. NUMERIC holds 9 decimals: precise amounts and units are rounded HALF_UP to 9
# for finance (the exact values stay in the invoice store), the same on both warehouses.
# The money module is imported where it is used: process reaches this module through its
# warehouse and never writes an invoice.

_NUMERIC_QUANTUM = Decimal("1e-9")
_NUMERIC_LIMIT = Decimal(10) ** 29  # NUMERIC(38, 9): 29 integer digits


def _numeric(value: Decimal) -> str:
    from meterline.core.money import MONEY_CONTEXT

    rounded = value.quantize(_NUMERIC_QUANTUM, ROUND_HALF_UP, MONEY_CONTEXT)
    if abs(rounded) >= _NUMERIC_LIMIT:
        # Checked here: a row out of NUMERIC's range is refused by BigQuery (bqemulator answers
        # 500 and the client retries until its deadline) instead of failing at once.
        raise ValueError(f"{value} does not fit BigQuery NUMERIC")
    return format(rounded, "f")


def _timestamp(value: datetime | None) -> str | None:
    return None if value is None else iso_us(to_us(value))


def _money(amount_cents: int, currency: str) -> dict[str, Any]:
    """Both forms of a rounded amount: NUMERIC major units and INT64 minor units."""
    from meterline.core.money import from_minor_units

    return {"amount": _numeric(from_minor_units(amount_cents, currency)), "amount_cents": amount_cents}


def invoice_row(invoice: Invoice, recorded_at_us: int) -> dict[str, Any]:
    return {
        "invoice_id": invoice.id,
        "version": invoice.version,
        "number": invoice.number,
        "sequential_id": invoice.sequential_id,
        "customer_external_id": invoice.customer_external_id,
        "subscription_external_id": invoice.subscription_external_id,
        "status": invoice.status,
        "payment_status": invoice.payment_status,
        "currency": invoice.currency,
        "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(),
        "from_utc": _timestamp(invoice.from_utc),
        "to_utc": _timestamp(invoice.to_utc),
        "issuing_date": invoice.issuing_date.isoformat(),
        "due_date": invoice.due_date.isoformat(),
        **_money(invoice.amount_cents, invoice.currency),
        "precise_amount": _numeric(sum((line.precise_amount for line in invoice.lines), Decimal(0))),
        "lines_count": len(invoice.lines),
        "finalized_at": _timestamp(invoice.finalized_at),
        "paid_at": _timestamp(invoice.paid_at),
        "provider_invoice_id": invoice.provider_invoice_id,
        "flag": invoice.flag,
        "recorded_at": iso_us(recorded_at_us),
    }


def invoice_line_rows(invoice: Invoice, recorded_at_us: int) -> list[dict[str, Any]]:
    return [
        {
            "invoice_id": invoice.id,
            "version": invoice.version,
            "position": position,
            "line_ref": line.ref,
            "customer_external_id": invoice.customer_external_id,
            "subscription_external_id": invoice.subscription_external_id,
            "issuing_date": invoice.issuing_date.isoformat(),
            "currency": invoice.currency,
            "kind": line.kind,
            "description": line.description,
            "units": _numeric(line.units),
            "precise_amount": _numeric(line.precise_amount),
            **_money(line.amount_cents, invoice.currency),
            "charge_ref": line.charge_ref,
            "filter_key": line.filter_key,
            "plan_code": line.plan_code,
            "from_datetime": _timestamp(line.from_datetime),
            "to_datetime": _timestamp(line.to_datetime),
            "events_count": line.events_count,
            "late_for": line.late_for,
            "recurring": line.recurring,
            "recorded_at": iso_us(recorded_at_us),
        }
        for position, line in enumerate(invoice.lines)
    ]


# Invoice ids per `recorded_versions` statement: ~40 bytes each, far below BigQuery's request
# size limit (10 MB), and a billing run's window rarely needs more than one.
VERSIONS_PER_QUERY = 10_000


class FinanceRecords:
    """The FinanceLedger port's writes and its one read, shared by every Warehouse adapter,
    which supplies `_insert(table, rows, row_ids)` (row_ids: BigQuery's insertIds; DuckDB has no
    use for them) and `_query(bigquery_sql, params)` (`sql.reads.DedupedReads`)."""

    def _insert(self, table: str, rows: list[dict[str, Any]], row_ids: list[str]) -> None:
        raise NotImplementedError

    def _query(self, bigquery_sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        raise NotImplementedError

    def recorded_versions(self, invoice_ids: Sequence[str], issued_since: date) -> dict[str, int]:
        ids = sorted(set(invoice_ids))
        out: dict[str, int] = {}
        for start in range(0, len(ids), VERSIONS_PER_QUERY):
            # The base table, not `invoices_latest`: the partition filter prunes only outside the
            # view's ROW_NUMBER, and the clustering by invoice_id skips other invoices' blocks.
            # An `invoices` row is written after its lines (`record_invoices`), so its version
            # stands for both tables.
            rows = self._query(
                "SELECT invoice_id, MAX(version) AS version FROM invoices "
                "WHERE issuing_date >= @since AND invoice_id IN UNNEST(@ids) GROUP BY invoice_id",
                {"since": issued_since, "ids": ids[start:start + VERSIONS_PER_QUERY]},
            )
            out.update({r["invoice_id"]: int(r["version"]) for r in rows})
        return out

    def record_invoice(self, invoice: Invoice, recorded_at_us: int) -> None:
        self.record_invoices([invoice], recorded_at_us)

    def record_invoices(self, invoices: Sequence[Invoice], recorded_at_us: int) -> None:
        # Every row is built before anything is written: a value that does not fit (ValueError)
        # writes nothing.
        heads = [invoice_row(invoice, recorded_at_us) for invoice in invoices]
        lines = [row for invoice in invoices for row in invoice_line_rows(invoice, recorded_at_us)]
        # Lines first, then the invoice rows: a crash between the two leaves lines that no
        # `invoices` row names, which `invoice_lines_latest` ignores; recording the same versions
        # again writes both (the views keep one copy of each).
        self._insert("invoice_lines", lines, [f"{r['invoice_id']}\x00{r['version']}\x00{r['line_ref']}" for r in lines])
        self._insert("invoices", heads, [f"{r['invoice_id']}\x00{r['version']}" for r in heads])

    def record_payment(self, payment: Payment) -> None:
        row = {
            "invoice_id": payment.invoice_id,
            "customer_external_id": payment.customer_external_id,
            "provider_event_id": payment.provider_event_id,
            "status": payment.status,
            "currency": payment.currency,
            **_money(payment.amount_cents, payment.currency),
            "recorded_at": iso_us(payment.at_us),
        }
        self._insert("payments", [row], [payment.provider_event_id])

    def record_provider_invoices(self, observations: Sequence[ProviderObservation]) -> None:
        rows = [provider_invoice_row(o) for o in observations]
        if not rows:
            return
        # insertId: the webhook's event id, or (provider invoice, time) for a pull; a copy that
        # gets through anyway has the same content, and provider_invoices_latest shows one.
        self._insert("provider_invoices", rows, [
            r["provider_event_id"] or f"{r['provider_invoice_id']}\x00{r['source']}\x00{r['observed_at']}" for r in rows])


def provider_invoice_row(observation: ProviderObservation) -> dict[str, Any]:
    return {
        "invoice_id": observation.invoice_id,
        "customer_external_id": observation.customer_external_id,
        "issuing_date": observation.issuing_date.isoformat(),
        "provider_invoice_id": observation.provider_invoice_id,
        "status": observation.status,
        "currency": observation.currency,
        "total_cents": observation.total_cents,
        "amount_paid_cents": observation.amount_paid_cents,
        "due_at": _timestamp(observation.due_at),
        "source": observation.source,
        "provider_event_id": observation.provider_event_id,
        "observed_at": iso_us(observation.observed_at_us),
    }
