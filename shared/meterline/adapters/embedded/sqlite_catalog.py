"""CatalogStore on SQLite: one table per kind, each row a Lago-shaped JSON document.

The key columns (code, external_id, external_customer_id) are the only ones SQL looks at;
the document is whatever the model's `to_lago()` gives, read back with `model_validate`, so
a model change needs no migration of columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import orjson
from pydantic import BaseModel

from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription
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

M = TypeVar("M", bound=BaseModel)


def _dump(model: BaseModel) -> str:
    return orjson.dumps(model.to_lago()).decode()  # type: ignore[attr-defined]


class SqliteCatalogStore:
    def __init__(self, db: SqliteDatabase):
        self._db = db
        self._db.connect().executescript(_SCHEMA)

    # -- documents keyed by one column ------------------------------------------------------

    def _put(self, table: str, key: str, model: BaseModel, create_only: bool) -> None:
        with self._db.write() as conn:
            if create_only:
                cur = conn.execute(f"INSERT INTO {table} VALUES (?, ?) ON CONFLICT DO NOTHING", (key, _dump(model)))
                if cur.rowcount == 0:
                    raise AlreadyExists(key)
            else:
                conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", (key, _dump(model)))

    def _get(self, table: str, column: str, key: str, model: type[M]) -> M | None:
        row = self._db.connect().execute(f"SELECT doc FROM {table} WHERE {column} = ?", (key,)).fetchone()
        return model.model_validate(orjson.loads(row[0])) if row else None

    def _list(self, table: str, column: str, model: type[M], offset: int, limit: int | None) -> tuple[list[M], int]:
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
        return [model.model_validate(orjson.loads(r[0])) for r in rows], total

    def put_billable_metric(self, metric: BillableMetric, *, create_only: bool = False) -> None:
        self._put("catalog_billable_metrics", metric.code, metric, create_only)

    def get_billable_metric(self, code: str) -> BillableMetric | None:
        return self._get("catalog_billable_metrics", "code", code, BillableMetric)

    def list_billable_metrics(self, offset: int = 0, limit: int | None = None) -> tuple[list[BillableMetric], int]:
        return self._list("catalog_billable_metrics", "code", BillableMetric, offset, limit)

    def put_plan(self, plan: Plan, *, create_only: bool = False) -> None:
        self._put("catalog_plans", plan.code, plan, create_only)

    def get_plan(self, code: str) -> Plan | None:
        return self._get("catalog_plans", "code", code, Plan)

    def list_plans(self, offset: int = 0, limit: int | None = None) -> tuple[list[Plan], int]:
        return self._list("catalog_plans", "code", Plan, offset, limit)

    def put_customer(self, customer: Customer) -> None:
        self._put("catalog_customers", customer.external_id, customer, False)

    def get_customer(self, external_id: str) -> Customer | None:
        return self._get("catalog_customers", "external_id", external_id, Customer)

    def list_customers(self, offset: int = 0, limit: int | None = None) -> tuple[list[Customer], int]:
        return self._list("catalog_customers", "external_id", Customer, offset, limit)

    # -- subscription histories --------------------------------------------------------------

    def get_subscription_history(self, external_id: str) -> SubscriptionHistory:
        row = self._db.connect().execute(
            "SELECT version, records FROM catalog_subscriptions WHERE external_id = ?", (external_id,)
        ).fetchone()
        if row is None:
            return SubscriptionHistory(external_id, (), 0)
        return SubscriptionHistory(external_id, _records(row[1]), row[0])

    def put_subscription_history(self, external_id: str, records: Sequence[Subscription], *, version: int) -> None:
        customer = history_customer(external_id, records)
        doc = orjson.dumps([r.to_lago() for r in records]).decode()
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
        return [record for row in rows for record in _records(row[0])]


def _records(doc: str | bytes) -> tuple[Subscription, ...]:
    return tuple(Subscription.model_validate(r) for r in orjson.loads(doc))

