"""The catalog store port, and the numeric-field lookup that ingest builds on it.

`CatalogStore` keeps the catalog's Lago-shaped models (`meterline.core.catalog`) as JSON documents:
billable metrics and plans by code, customers by external_id, and subscriptions by
external_id. Adapters: SQLite (`adapters.embedded.sqlite_catalog`) and Firestore
(`adapters.gcp.firestore_catalog`); `tests/contract/test_catalog_store.py` runs one suite on
both.

Subscriptions are stored as a HISTORY per external_id, because Lago keeps one record per plan:
an upgrade terminates the current record and appends a new one with the same external_id, and
a downgrade appends a pending record. Billing needs every record (the old plan is prorated up
to the switch), so the history is written whole, with an optimistic version check, so that
two concurrent plan changes can never both apply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from meterline import logs
from meterline.core.catalog import NUMERIC_AGGREGATIONS, BillableMetric, Customer, Plan, Subscription

__all__ = [
    "AlreadyExists",
    "CatalogStore",
    "NumericFields",
    "StaleWrite",
    "SubscriptionHistory",
    "history_customer",
]

_log = logs.get("catalog")



class AlreadyExists(Exception):
    """A create-only put found the key taken (Lago: 422 value_already_exist)."""


class StaleWrite(Exception):
    """The subscription history changed since it was read; read again and retry."""


@dataclass(frozen=True)
class SubscriptionHistory:
    """Every record of one external_id, oldest first, and the version to write against.

    `version` is 0 when the external_id has never been stored.
    """

    external_id: str
    records: tuple[Subscription, ...]
    version: int

    @property
    def exists(self) -> bool:
        return bool(self.records)


def history_customer(external_id: str, records: Sequence[Subscription]) -> str:
    """The customer of a history about to be written; refuses an empty or mixed history,
    which would be a caller's bug (adapters call this before writing)."""
    if not records:
        raise ValueError("a subscription history needs at least one record")
    customers = {r.external_customer_id for r in records}
    if {r.external_id for r in records} != {external_id} or len(customers) != 1:
        raise ValueError("every record of a history must have the same external_id and customer")
    return customers.pop()


class CatalogStore(Protocol):
    # Billable metrics and plans, by code. `create_only` makes the put a create-if-absent that
    # raises AlreadyExists, atomically (two concurrent creates: exactly one wins).
    def put_billable_metric(self, metric: BillableMetric, *, create_only: bool = False) -> None: ...

    def get_billable_metric(self, code: str) -> BillableMetric | None: ...

    def list_billable_metrics(self, offset: int = 0, limit: int | None = None) -> tuple[list[BillableMetric], int]:
        """A page ordered by code, and the total count."""
        ...

    def put_plan(self, plan: Plan, *, create_only: bool = False) -> None: ...

    def get_plan(self, code: str) -> Plan | None: ...

    def list_plans(self, offset: int = 0, limit: int | None = None) -> tuple[list[Plan], int]: ...

    # Customers: upsert by external_id.
    def put_customer(self, customer: Customer) -> None: ...

    def get_customer(self, external_id: str) -> Customer | None: ...

    def list_customers(self, offset: int = 0, limit: int | None = None) -> tuple[list[Customer], int]: ...

    # Subscriptions: one history per external_id.
    def get_subscription_history(self, external_id: str) -> SubscriptionHistory: ...

    def put_subscription_history(self, external_id: str, records: Sequence[Subscription], *, version: int) -> None:
        """Replace the history of `external_id` with `records` (oldest first), if its stored
        version is still `version`; raises StaleWrite otherwise. Every record must carry
        this external_id and one external_customer_id."""
        ...

    def list_subscriptions(self, external_customer_id: str | None = None) -> list[Subscription]:
        """Every record (all histories, all statuses), optionally of one customer, ordered by
        external_id then history order."""
        ...


class NumericFields:
    """The ingest check's lookup: event code -> the property that must be numeric, or None.

    Built from the catalog's billable metrics (sum, max, latest and weighted_sum metrics name
    their field_name), reloaded at most every `ttl` seconds. It is called on the ingest hot
    path, so a lookup is a dict read; one thread reloads while the others keep the previous map.

    NOTE: a catalog outage must not stop ingest. A failed reload keeps the last good map (and
    retries after `retry` seconds); before the first good load every lookup answers None, so
    events are accepted unchecked rather than refused: losing events is worse than missing
    a 422 hint.
    """

    def __init__(
        self,
        store: CatalogStore,
        ttl: float = 30.0,
        retry: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._store = store
        self._ttl = ttl
        self._retry = retry
        self._clock = clock
        self._fields: dict[str, str] = {}
        self._next_load = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, code: str) -> str | None:
        if self._clock() >= self._next_load:
            self._reload()
        return self._fields.get(code)

    def invalidate(self) -> None:
        """Reload on the next lookup (after a metric was created or changed in this process)."""
        self._next_load = float("-inf")

    def _reload(self) -> None:
        # Non-blocking: if another thread is reloading, answer from the current map.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._clock() < self._next_load:
                return  # another thread just reloaded
            try:
                metrics, _ = self._store.list_billable_metrics()
            except Exception as exc:  # noqa: BLE001 - any store failure: keep the last good map
                logs.event(_log, "numeric fields reload failed", 30, error=type(exc).__name__)
                self._next_load = self._clock() + self._retry
                return
            # One assignment: readers see the old map or the new one, never a half-built one.
            self._fields = {
                m.code: m.field_name
                for m in metrics
                if m.aggregation_type in NUMERIC_AGGREGATIONS and m.field_name
            }
            self._next_load = self._clock() + self._ttl
        finally:
            self._lock.release()
