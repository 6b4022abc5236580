"""CatalogStore on SQLite: one table per kind, each row a Lago-shaped JSON document.

The key columns (code, external_id, external_customer_id) are the only ones SQL looks at;
the document is the model's `to_document()` (its `to_lago()` and its timestamps), read back
with `from_document` (`meterline.adapters.catalog_documents`, the text Firestore's catalog
keeps too), so a model change needs no migration of columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from meterline.adapters.catalog_documents import dump_document, dump_records, load_document, load_records
from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.core.catalog import BillableMetric, Customer, Plan, Stamped, Subscription
from meterline.core.subscriptions import SubscriptionHistory, history_customer
from meterline.ports import AlreadyExists, StaleWrite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS catalog_billable_metrics (
  code TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog_plans (
  code TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog_customers (
  external_id TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog_subscriptions (
  external_id TEXT PRIMARY KEY,
  external_customer_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  records TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS catalog_subscriptions_by_customer ON catalog_subscriptions (external_customer_id, external_id);
"""

S = TypeVar("S", bound=Stamped)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqliteCatalogStore:
    def __init__(self, db: SqliteDatabase, clock: Callable[[], datetime] = _utc_now):
        self._db = db
        self._clock = clock  # stamps created_at / updated_at
        self._db.connect().executescript(_SCHEMA)

    # -- documents keyed by one column ------------------------------------------------------

    def _put(self, table: str, column: str, key: str, model: S, create_only: bool) -> S:
        # IMMEDIATE: the read of the stored stamps and the write are one atomic step.
        with self._db.write() as conn:
            row = conn.execute(f"SELECT doc FROM {table} WHERE {column} = ?", (key,)).fetchone()
            if row is not None and create_only:
                raise AlreadyExists(key)
            stored = load_document(type(model), row[0]) if row is not None else None
            written = model.stamped_over(stored, self._clock())
            if written is not stored:
                conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, dump_document(written)))
        return written

    def _get(self, table: str, column: str, key: str, model: type[S]) -> S | None:
        row = self._db.connect().execute(f"SELECT doc FROM {table} WHERE {column} = ?", (key,)).fetchone()
        return load_document(model, row[0]) if row else None

    def _list(self, table: str, column: str, model: type[S], offset: int, limit: int | None) -> tuple[list[S], int]:
        conn = self._db.connect()
        # One read transaction, so the page and the total agree.
        conn.execute("BEGIN")
        try:
            total = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            rows = conn.execute(
                f"SELECT doc FROM {table} ORDER BY {column} LIMIT ? OFFSET ?", (-1 if limit is None else limit, offset)
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        return [load_document(model, r[0]) for r in rows], total

    def _delete(self, table: str, column: str, key: str, model: type[S]) -> S | None:
        with self._db.write() as conn:
            row = conn.execute(f"DELETE FROM {table} WHERE {column} = ? RETURNING doc", (key,)).fetchone()
        return load_document(model, row[0]) if row else None

    def put_billable_metric(self, metric: BillableMetric, *, create_only: bool = False) -> BillableMetric:
        return self._put("catalog_billable_metrics", "code", metric.code, metric, create_only)

    def get_billable_metric(self, code: str) -> BillableMetric | None:
        return self._get("catalog_billable_metrics", "code", code, BillableMetric)

    def list_billable_metrics(self, offset: int = 0, limit: int | None = None) -> tuple[list[BillableMetric], int]:
        return self._list("catalog_billable_metrics", "code", BillableMetric, offset, limit)

    def delete_billable_metric(self, code: str) -> BillableMetric | None:
        return self._delete("catalog_billable_metrics", "code", code, BillableMetric)

    def put_plan(self, plan: Plan, *, create_only: bool = False) -> Plan:
        return self._put("catalog_plans", "code", plan.code, plan, create_only)

    def get_plan(self, code: str) -> Plan | None:
        return self._get("catalog_plans", "code", code, Plan)

    def list_plans(self, offset: int = 0, limit: int | None = None) -> tuple[list[Plan], int]:
        return self._list("catalog_plans", "code", Plan, offset, limit)

    def delete_plan(self, code: str) -> Plan | None:
        return self._delete("catalog_plans", "code", code, Plan)

    def put_customer(self, customer: Customer) -> Customer:
        return self._put("catalog_customers", "external_id", customer.external_id, customer, False)

    def get_customer(self, external_id: str) -> Customer | None:
        return self._get("catalog_customers", "external_id", external_id, Customer)

    def list_customers(self, offset: int = 0, limit: int | None = None) -> tuple[list[Customer], int]:
        return self._list("catalog_customers", "external_id", Customer, offset, limit)

    def delete_customer(self, external_id: str) -> Customer | None:
        return self._delete("catalog_customers", "external_id", external_id, Customer)

    # -- subscription histories --------------------------------------------------------------

    def get_subscription_history(self, external_id: str) -> SubscriptionHistory:
        row = self._db.connect().execute(
            "SELECT version, records FROM catalog_subscriptions WHERE external_id = ?", (external_id,)
        ).fetchone()
        if row is None:
            return SubscriptionHistory(external_id, (), 0)
        return SubscriptionHistory(external_id, load_records(row[1]), row[0])

    def put_subscription_history(self, external_id: str, records: Sequence[Subscription], *, version: int) -> None:
        customer = history_customer(external_id, records)
        doc = dump_records(records)
        # IMMEDIATE: the version read and the write are one atomic step.
        with self._db.write() as conn:
            row = conn.execute("SELECT version FROM catalog_subscriptions WHERE external_id = ?", (external_id,)).fetchone()
            if (row[0] if row else 0) != version:
                raise StaleWrite(external_id)
            conn.execute(
                "INSERT OR REPLACE INTO catalog_subscriptions VALUES (?, ?, ?, ?)",
                (external_id, customer, version + 1, doc),
            )

    def list_subscriptions(self, external_customer_id: str | None = None) -> list[Subscription]:
        conn = self._db.connect()
        if external_customer_id is None:
            rows = conn.execute("SELECT records FROM catalog_subscriptions ORDER BY external_id").fetchall()
        else:
            rows = conn.execute(
                "SELECT records FROM catalog_subscriptions WHERE external_customer_id = ? ORDER BY external_id",
                (external_customer_id,),
            ).fetchall()
        return [record for row in rows for record in load_records(row[0])]


