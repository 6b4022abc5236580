"""Rows and documents shared by the adapters: event <-> warehouse row, invoice -> finance rows
(both warehouses), and invoice <-> JSON document (both invoice stores).

Timestamps travel as ISO-8601 text with microseconds and amounts as decimal text, so no
value passes through a float on its way into either warehouse or store.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import orjson

from meterline.adapters.sql import json_path, usage
from meterline.core.clock import iso_us, to_us
from meterline.core.events import Event
from meterline.core.usage_query import UsageRow
from meterline.ports import ArrivalProbe, Payment, Rejection, SubscriptionTotal

if TYPE_CHECKING:
    from meterline.core.invoices import Invoice
    from meterline.core.usage_query import UsageQuery, UsageWindow


def _payload_columns(event: Event) -> dict[str, Any]:
    """The columns `events` and `rejected_events` share."""
    return {
        "external_subscription_id": event.external_subscription_id,
        "transaction_id": event.transaction_id,
        "code": event.code,
        "timestamp": iso_us(event.timestamp_us),
        "properties": orjson.dumps(event.properties).decode(),
        "precise_total_amount_cents": event.precise_total_amount_cents,
        "payload_hash": event.payload_hash(),
        "received_at": iso_us(event.received_at_us),
    }


def event_row(event: Event, processed_at_us: int) -> dict[str, Any]:
    return {**_payload_columns(event), "timestamp_given": event.timestamp_given, "processed_at": iso_us(processed_at_us)}


def rejected_row(rejection: Rejection, rejected_at_us: int) -> dict[str, Any]:
    return {**_payload_columns(rejection.event), "reason": rejection.reason, "rejected_at": iso_us(rejected_at_us)}


def _amount_text(value: Any) -> str | None:
    if value is None:
        return None
    # normalize() drops the warehouse's padding (1.500000000 -> 1.5) without changing the value.
    text = format(Decimal(value).normalize(), "f")
    return text


def event_from_row(row: dict[str, Any]) -> Event:
    return Event(
        transaction_id=row["transaction_id"],
        external_subscription_id=row["external_subscription_id"],
        code=row["code"],
        timestamp_us=to_us(row["timestamp"]),
        properties=orjson.loads(row["properties"]),
        precise_total_amount_cents=_amount_text(row["precise_total_amount_cents"]),
        timestamp_given=bool(row["timestamp_given"]),
        received_at_us=to_us(row["received_at"]),
    )


class DedupedReads:
    """The Warehouse port's typed reads, each one BigQuery SQL over deduplicated rows; shared by
    every Warehouse adapter, which supplies `_query`."""

    def _query(self, bigquery_sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run BigQuery-dialect SQL with `@name` parameters; rows as dicts."""
        raise NotImplementedError

    def usage_rows(self, query: UsageQuery, windows: Sequence[UsageWindow]) -> list[UsageRow]:
        # The statement's columns are UsageRow's fields, in its types on both engines.
        statement = usage.statement(query, narrow=usage.narrow(windows))
        return [UsageRow(**row) for row in self._query(statement, usage.params(query, windows))]

    def totals(self, code: str, field: str) -> list[SubscriptionTotal]:
        rows = self._query(
            "SELECT external_subscription_id, COUNT(*) AS events, "
            f"SUM(SAFE_CAST(JSON_VALUE(properties, {json_path(field)}) AS NUMERIC(38, 9))) AS total "
            "FROM events_deduped WHERE code = @code GROUP BY external_subscription_id ORDER BY external_subscription_id",
            {"code": code},
        )
        return [SubscriptionTotal(r["external_subscription_id"], int(r["events"]), Decimal(r["total"] or 0)) for r in rows]

    def count_rejected(self) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM rejected_events_deduped")[0]["n"])

    def get_event(self, external_subscription_id: str, transaction_id: str) -> Event | None:
        rows = self._query(
            "SELECT * FROM events_deduped WHERE external_subscription_id = @sub AND transaction_id = @txn",
            {"sub": external_subscription_id, "txn": transaction_id},
        )
        return event_from_row(rows[0]) if rows else None

    def stored_keys(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        # `subs` is a constant list, so BigQuery can skip the blocks of other subscriptions
        # (the table is clustered by it); the key has no timestamp to prune partitions with.
        rows = self._query(
            "SELECT DISTINCT e.external_subscription_id, e.transaction_id FROM events AS e, UNNEST(@keys) AS k "
            "WHERE e.external_subscription_id IN UNNEST(@subs) "
            "AND e.external_subscription_id = k.sub AND e.transaction_id = k.txn",
            {"keys": [{"sub": s, "txn": t} for s, t in keys], "subs": sorted({s for s, _ in keys})},
        )
        return {(r["external_subscription_id"], r["transaction_id"]) for r in rows}

    def windows_with_arrivals(self, probes: Sequence[ArrivalProbe], carry_over_codes: Sequence[str] = ()) -> set[str]:
        if not probes:
            return set()
        slack = usage.DEDUP_SLACK_US  # a copy just outside a window can still change its dedup
        bound = [{"window_id": p.window_id, "sub": p.external_subscription_id, "start_us": p.start_us - slack,
                  "end_us": p.end_us + slack, "since_us": p.since_us} for p in probes]
        # Only subscription, timestamp and processed_at are read (~36 bytes an event, where the
        # usage query reads ~160), and the scalar bounds let BigQuery prune partitions. Events
        # of recurring metrics count from before a window (seats added months ago), so, as in
        # the usage query, they have a branch of their own bounded only from above.
        select = ("SELECT p.window_id FROM events AS e JOIN UNNEST(@probes) AS p ON e.external_subscription_id = p.sub "
                  "WHERE e.timestamp < TIMESTAMP_MICROS(@scan_to_us) AND e.timestamp < TIMESTAMP_MICROS(p.end_us) "
                  "AND e.processed_at >= TIMESTAMP_MICROS(p.since_us) AND ")
        branches = [select + "e.timestamp >= TIMESTAMP_MICROS(@scan_from_us) AND e.timestamp >= TIMESTAMP_MICROS(p.start_us)"]
        if carry_over_codes:
            branches.append(select + "e.code IN UNNEST(@carry_over)")
        rows = self._query(
            f"SELECT DISTINCT window_id FROM ({' UNION ALL '.join(branches)})",
            {"probes": bound, "scan_from_us": min(b["start_us"] for b in bound),
             "scan_to_us": max(b["end_us"] for b in bound),
             **({"carry_over": sorted(carry_over_codes)} if carry_over_codes else {})},
        )
        return {r["window_id"] for r in rows}

    def list_events(self, external_subscription_id: str, limit: int, offset: int) -> tuple[list[Event], int]:
        rows = self._query(
            "SELECT *, COUNT(*) OVER () AS total_count FROM events_deduped WHERE external_subscription_id = @sub "
            "ORDER BY timestamp DESC, transaction_id LIMIT @limit OFFSET @offset",
            {"sub": external_subscription_id, "limit": limit, "offset": offset},
        )
        if rows:
            return [event_from_row(r) for r in rows], int(rows[0]["total_count"])
        # A page past the end has no row to carry the total.
        count = self._query(
            "SELECT COUNT(*) AS n FROM events_deduped WHERE external_subscription_id = @sub",
            {"sub": external_subscription_id},
        )
        return [], int(count[0]["n"])


# -- invoices as JSON documents (SqliteInvoiceStore, FirestoreInvoiceStore) --------------------
# The whole invoice is one JSON text: Decimals as their exact text, datetimes as ISO-8601 with
# all six microsecond digits and their offset, dates as ISO dates. Reading goes by the
# dataclasses' own type hints, so a field the core adds later round-trips with no change here
# (and a document written before it existed reads back with the field's default).


def _exact(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact, exponent included: Decimal(str(d)) == d, digit for digit
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in an invoice document")


@functools.cache
def _readers(cls: type) -> dict[str, Callable[[Any], Any]]:
    """Field name -> how to read its stored text back, for the fields that are not plain JSON."""
    readers: dict[str, Callable[[Any], Any]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        kinds = set(typing.get_args(hint)) - {type(None)} or {hint}  # `X | None` -> {X}
        # datetime before date: a datetime is a date too.
        for kind, read in ((Decimal, Decimal), (datetime, datetime.fromisoformat), (date, date.fromisoformat)):
            if kind in kinds:
                readers[name] = read
                break
    return readers


def _read(cls: type, data: dict[str, Any]) -> Any:
    readers = _readers(cls)
    return cls(**{k: v if v is None or k not in readers else readers[k](v) for k, v in data.items()})


def invoice_document(invoice: Invoice, version: int) -> str:
    """The invoice as stored, carrying the stored `version` (the document and the store's
    version column never disagree)."""
    return orjson.dumps(
        replace(invoice, version=version), default=_exact, option=orjson.OPT_PASSTHROUGH_DATETIME
    ).decode()


def invoice_record(invoice: Invoice, version: int) -> dict[str, Any]:
    """What both invoice stores keep per invoice: the document, and beside it the fields they
    filter and sort on (rewritten from the invoice on every write; `issuing_date` as ISO
    text, whose text order is date order)."""
    return {
        "id": invoice.id,
        "customer_external_id": invoice.customer_external_id,
        "subscription_external_id": invoice.subscription_external_id,
        "status": invoice.status,
        "issuing_date": invoice.issuing_date.isoformat(),
        "provider_invoice_id": invoice.provider_invoice_id,
        "version": version,
        "doc": invoice_document(invoice, version),
    }


def invoice_from_document(doc: str | bytes) -> Invoice:
    # Imported here: the process function reaches this module through its warehouse and never
    # reads an invoice (the pricing core stays off its cold start).
    from meterline.core.invoices import Invoice, InvoiceLine

    data = orjson.loads(doc)
    data["lines"] = tuple(_read(InvoiceLine, line) for line in data.get("lines", ()))
    return _read(Invoice, data)


# -- finance rows: `invoices`, `invoice_lines`, `payments` --------------------------------------
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
            "recorded_at": iso_us(recorded_at_us),
        }
        for position, line in enumerate(invoice.lines)
    ]


class FinanceRecords:
    """The Warehouse port's finance writes, shared by every Warehouse adapter, which supplies
    `_insert(table, rows, row_ids)` (row_ids: BigQuery's insertIds; DuckDB has no use for them)."""

    def _insert(self, table: str, rows: list[dict[str, Any]], row_ids: list[str]) -> None:
        raise NotImplementedError

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
