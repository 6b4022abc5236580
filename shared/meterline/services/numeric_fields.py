"""The numeric-field lookup ingest builds on the catalog store (`ports.CatalogStore`)."""

from __future__ import annotations

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
