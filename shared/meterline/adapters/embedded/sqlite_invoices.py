"""InvoiceStore and ProcessedEvents on SQLite (the embedded backend).

An invoice is one row (`invoice_documents.invoice_record`, as Firestore keeps it): its whole JSON document
(exact Decimals, microsecond datetimes) plus the columns that SQL filters and sorts on,
rewritten from the invoice on every write. Numbers come from a counter row per customer,
bumped in the same IMMEDIATE transaction that finalizes the invoice: a number is given once,
and a crash either keeps both writes or neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.adapters.invoice_documents import invoice_from_document, invoice_record
from meterline.core.clock import now_us
from meterline.core.invoices import Invoice, invoice_number
from meterline.ports import StaleWrite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS billing_invoices (
  id TEXT PRIMARY KEY,
  customer_external_id TEXT NOT NULL,
  subscription_external_id TEXT NOT NULL,
  status TEXT NOT NULL,
  issuing_date TEXT NOT NULL,  -- ISO date: text order is date order
  provider_invoice_id TEXT,
  version INTEGER NOT NULL,
  doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS billing_invoices_by_customer ON billing_invoices (customer_external_id, issuing_date);
CREATE INDEX IF NOT EXISTS billing_invoices_by_subscription ON billing_invoices (subscription_external_id, issuing_date);
CREATE INDEX IF NOT EXISTS billing_invoices_by_date ON billing_invoices (issuing_date, id);
CREATE INDEX IF NOT EXISTS billing_invoices_by_provider_id ON billing_invoices (provider_invoice_id)
  WHERE provider_invoice_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS billing_invoice_counters (
  customer_external_id TEXT PRIMARY KEY,
  last_sequence INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS billing_processed_events (
  event_id TEXT PRIMARY KEY,
  seen_at_us INTEGER NOT NULL
) WITHOUT ROWID;
"""

_COLUMNS = ("id", "customer_external_id", "subscription_external_id", "status", "issuing_date",
            "provider_invoice_id", "version", "doc")  # the keys of `invoice_record`
_INTO = f"INTO billing_invoices ({', '.join(_COLUMNS)}) VALUES ({', '.join(f':{c}' for c in _COLUMNS)})"
# The version check and the write in one statement: `expected` is the version the writer read.
_UPDATE = (f"UPDATE billing_invoices SET {', '.join(f'{c} = :{c}' for c in _COLUMNS if c != 'id')} "
           "WHERE id = :id AND version = :expected")

# NOTE: a write that is one statement runs alone, in SQLite's own transaction for it (the
# connection autocommits): as atomic and as durable as one wrapped in BEGIN IMMEDIATE ...
# COMMIT, and a billing run makes tens of thousands of them (each BEGIN and COMMIT is a
# statement of its own). Only finalizing, which moves a customer's counter with its invoices,
# takes a transaction of its own.


def _insert_if_absent(db: SqliteDatabase, statement: str, params: Any) -> bool:
    """Run an INSERT ... ON CONFLICT DO NOTHING; True if it inserted its row."""
    return db.connect().execute(statement, params).rowcount == 1


def _write(conn: sqlite3.Connection, invoice: Invoice) -> Invoice:
    """If the stored version is still `invoice.version` (0: absent), store the next one and
    return the invoice with it; raise StaleWrite otherwise (nothing written)."""
    record = invoice_record(invoice, invoice.version + 1)
    if invoice.version == 0:
        written = conn.execute(f"INSERT {_INTO} ON CONFLICT DO NOTHING", record).rowcount
    else:
        written = conn.execute(_UPDATE, {**record, "expected": invoice.version}).rowcount
    if written != 1:
        raise StaleWrite(invoice.id)
    return replace(invoice, version=invoice.version + 1)


class SqliteInvoiceStore:
    def __init__(self, db: SqliteDatabase):
        self._db = db
        self._db.connect().executescript(_SCHEMA)

    def create(self, invoice: Invoice) -> bool:
        return _insert_if_absent(self._db, f"INSERT {_INTO} ON CONFLICT DO NOTHING", invoice_record(invoice, 1))

    def get(self, invoice_id: str) -> Invoice | None:
        row = self._db.connect().execute("SELECT doc FROM billing_invoices WHERE id = ?", (invoice_id,)).fetchone()
        return invoice_from_document(row[0]) if row else None

    def get_many(self, invoice_ids: Sequence[str]) -> dict[str, Invoice]:
        conn, found = self._db.connect(), {}
        for at in range(0, len(invoice_ids), 500):  # under SQLite's bound-parameter limit
            chunk = invoice_ids[at:at + 500]
            marks = ", ".join("?" * len(chunk))
            for invoice_id, doc in conn.execute(f"SELECT id, doc FROM billing_invoices WHERE id IN ({marks})", chunk):
                found[invoice_id] = invoice_from_document(doc)
        return found

    def update(self, invoice: Invoice) -> Invoice:
        return _write(self._db.connect(), invoice)

    def issue(self, invoice: Invoice, at: datetime) -> Invoice:
        (outcome,) = self.issue_many([invoice], at)  # one numbering rule, in one place
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def issue_many(self, invoices: Sequence[Invoice], at: datetime) -> list[Invoice | Exception]:
        # ONE transaction for the whole chunk: each customer's counter is read once and written
        # once at the end, and a refused invoice does not advance it. 10,000 finalizations:
        # ~10,000 statements instead of 40,000 (BEGIN, counter, invoice, COMMIT each).
        outcomes: list[Invoice | Exception] = []
        with self._db.write() as conn:
            counters: dict[str, int] = {}
            for invoice in invoices:
                customer = invoice.customer_external_id
                if customer not in counters:
                    row = conn.execute("SELECT last_sequence FROM billing_invoice_counters WHERE customer_external_id = ?",
                                       (customer,)).fetchone()
                    counters[customer] = row[0] if row else 0
                sequence = counters[customer] + 1
                try:
                    number = invoice_number(customer, sequence)
                    outcomes.append(_write(conn, invoice.moved("finalized", at, number=number, sequential_id=sequence)))
                except (StaleWrite, ValueError) as refused:
                    outcomes.append(refused)
                    continue
                counters[customer] = sequence
            conn.executemany(
                "INSERT INTO billing_invoice_counters VALUES (?, ?) ON CONFLICT (customer_external_id) "
                "DO UPDATE SET last_sequence = excluded.last_sequence",
                list(counters.items()),
            )
        return outcomes

    def list(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        statuses: Sequence[str] | None = None,
        issuing_date_from: date | None = None,
        issuing_date_to: date | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[Invoice], int]:
        where, params = ["1"], []
        for clause, value in (
            ("customer_external_id = ?", customer_external_id),
            ("subscription_external_id = ?", subscription_external_id),
            ("issuing_date >= ?", issuing_date_from and issuing_date_from.isoformat()),
            ("issuing_date <= ?", issuing_date_to and issuing_date_to.isoformat()),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(statuses)
        condition = " AND ".join(where)
        conn = self._db.connect()
        # The total rides on every row of the page (one statement, so page and total agree);
        # only a page past the end needs a count of its own.
        rows = conn.execute(
            f"SELECT doc, COUNT(*) OVER () FROM billing_invoices WHERE {condition} "
            "ORDER BY issuing_date DESC, id LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset),
        ).fetchall()
        if rows:
            return [invoice_from_document(r[0]) for r in rows], rows[0][1]
        return [], conn.execute(f"SELECT COUNT(*) FROM billing_invoices WHERE {condition}", params).fetchone()[0]

    def find_by_provider_id(self, provider_invoice_id: str) -> Invoice | None:
        row = self._db.connect().execute(
            "SELECT doc FROM billing_invoices WHERE provider_invoice_id = ? ORDER BY id LIMIT 1", (provider_invoice_id,)
        ).fetchone()
        return invoice_from_document(row[0]) if row else None


class SqliteProcessedEvents:
    """Webhook event ids, kept for good: the embedded backend sees few, and SQLite has no TTL."""

    def __init__(self, db: SqliteDatabase):
        self._db = db
        self._db.connect().executescript(_SCHEMA)

    def seen(self, event_id: str) -> bool:
        return (
            self._db.connect().execute("SELECT 1 FROM billing_processed_events WHERE event_id = ?", (event_id,)).fetchone()
            is not None
        )

    def first_time(self, event_id: str) -> bool:
        return _insert_if_absent(
            self._db, "INSERT INTO billing_processed_events VALUES (?, ?) ON CONFLICT DO NOTHING", (event_id, now_us())
        )
