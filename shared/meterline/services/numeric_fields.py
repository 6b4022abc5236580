"""The numeric-field lookup ingest builds on the catalog store (`ports.CatalogStore`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from meterline import logs
from meterline.core.catalog import NUMERIC_AGGREGATIONS
from meterline.ports import CatalogStore

__all__ = ["NumericFields"]

_log = logs.get("catalog")


class NumericFields:
    """The ingest check's lookup: event code -> the property that must be numeric, or None.

    Built from the catalog's billable metrics (sum, max, latest and weighted_sum metrics name
    their field_name), reloaded at most every `ttl` seconds. It is called on the ingest hot
    path, so a lookup is a dict read; one thread reloads while the others keep the previous map.

    A code the map does not know (a metric created since the last load, here or by `meterline
    catalog apply` in another process) is read fresh from the store at once, so the door never
    checks against a catalog older than the one billing will read: "accepted" keeps meaning
    "counted" right after a catalog change. An event whose code no metric has costs that one
    read every time (its sender is misconfigured); a change to an existing metric's field_name
    reaches the map with the next load (`ttl`), and such a change is refused while a plan
    charges for the metric (`core/catalog` rules).

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
        self._known: frozenset[str] = frozenset()  # every metric code of the last load
        self._next_load = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, code: str) -> str | None:
        if self._clock() >= self._next_load:
            self._reload()
        field = self._fields.get(code)
        if field is None and code not in self._known:
            return self._fresh(code)
        return field

    def _fresh(self, code: str) -> str | None:
        try:
            metric = self._store.get_billable_metric(code)
        except Exception as exc:  # noqa: BLE001 - any store failure: accept unchecked, as before the first load
            logs.event(_log, "numeric field lookup failed", logging.WARNING, error=type(exc).__name__)
            return None
        if metric is None:
            return None
        field = metric.field_name if metric.aggregation_type in NUMERIC_AGGREGATIONS and metric.field_name else None
        # Copies, not edits: a reader sees the old maps or the new ones. A reload running now may
        # replace them with what it read, which has this metric or is older by at most `ttl`.
        if field is not None:
            self._fields = {**self._fields, code: field}
        self._known = self._known | {code}
        return field

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
                logs.event(_log, "numeric fields reload failed", logging.WARNING, error=type(exc).__name__)
                self._next_load = self._clock() + self._retry
                return
            # One assignment: readers see the old map or the new one, never a half-built one.
            self._fields = {
                m.code: m.field_name
                for m in metrics
                if m.aggregation_type in NUMERIC_AGGREGATIONS and m.field_name
            }
            self._known = frozenset(m.code for m in metrics)
            self._next_load = self._clock() + self._ttl
        finally:
            self._lock.release()
