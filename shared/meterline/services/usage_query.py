"""Usage for many (subscription, period) windows at once, from ONE warehouse query.

This is the pure part: the typed request (the catalog's charges, the windows) and the turning
of the warehouse's typed rows into rating's usage. The SQL that answers it belongs to the
adapters (`meterline.adapters.sql.usage`), behind `Warehouse.usage_rows`.

Each event joins its subscription's window and every charge of that window's plan on the
event's metric, lands in one bucket per charge (the most specific matching filter, else the
charge's own bucket, as Lago matches filters), and is aggregated per (window, charge, bucket).
Events that rating needs one by one (the add/remove events of a recurring unique_count metric,
the values of a weighted_sum metric, the per-transaction values of a percentage charge) come
back as their own rows.

One subscription's data never fails another's usage: the numeric domain keeps every sum far
from overflow (`meterline.core.numbers`), and if the warehouse still refuses the query, `run`
isolates the windows it fails on and returns everyone else's usage (`WindowUsage.failed`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import NamedTuple

from meterline import logs
from meterline.core.catalog import BillableMetric, Charge, ChargeModelName, Plan
from meterline.core.clock import to_us
from meterline.core.pricing.usage import ChargeUsage, SeatEvent, UsageKey
from meterline.ports import UsageRow, Warehouse

_NEEDS_ROWS: tuple[ChargeModelName, ...] = ("percentage", "graduated_percentage")
_log = logs.get("usage")

# NOTE: when the query fails, the windows are split in halves and each half asked again, down
# to single windows, so k failing windows among n cost about k*log2(n) extra queries, not n.
# Failures that look like the warehouse, not one subscription's data, end the search and
# raise: the first few windows all failed with nothing succeeding (the warehouse is down, or
# the SQL is wrong), or more than _MAX_FAILED windows failed. Then nobody is billed from a
# broken warehouse, and a down warehouse costs a handful of queries, not thousands.
_FIRST_FAILURES_TO_GIVE_UP = 3
_MAX_FAILED = 16


class UsageQueryError(ValueError):
    """The catalog or the windows hold something the usage query cannot aggregate (the message says what)."""


@dataclass(frozen=True)
class UsageWindow:
    """One subscription's slice of time to aggregate, [start, end), under one plan."""

    window_id: str
    external_subscription_id: str
    plan_code: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise UsageQueryError(f"window {self.window_id}: bounds must be timezone-aware")


class WindowUsage(dict[str, dict[UsageKey, ChargeUsage]]):
    """Usage per window id, in the shape `rate_subscription` takes, for every window but the
    ones in `failed` (window id -> the warehouse's error, type and message)."""

    def __init__(self, usage: Mapping[str, dict[UsageKey, ChargeUsage]] = (), failed: Mapping[str, str] | None = None):
        super().__init__(usage)
        self.failed: dict[str, str] = dict(failed or {})


class QueryCharge(NamedTuple):
    """One charge of one plan in the query, with the metric it aggregates."""

    plan_code: str
    charge: Charge
    metric: BillableMetric
    per_event: bool  # rating needs this charge's events one by one, not aggregated


def _per_event(charge: Charge, metric: BillableMetric) -> bool:
    if metric.aggregation_type == "weighted_sum" or (metric.recurring and metric.aggregation_type == "unique_count"):
        return True
    if charge.charge_model not in _NEEDS_ROWS:
        return False
    props = [charge.properties, *(f.properties for f in charge.filters)]
    return any(getattr(p, "needs_event_values", False) for p in props)


class UsageQuery:
    """The request for one catalog; `run` asks the warehouse and turns rows into rating's usage."""

    def __init__(self, metrics: Mapping[str, BillableMetric], plans: Iterable[Plan]):
        self.metrics = dict(metrics)
        self.plans = {p.code: p for p in plans}
        charges = []
        for plan in self.plans.values():
            for charge in plan.charges:
                metric = self.metrics.get(charge.billable_metric_code or "")
                if metric is None:
                    raise UsageQueryError(f"plan {plan.code}: unknown billable metric {charge.billable_metric_code!r}")
                charges.append(QueryCharge(plan.code, charge, metric, _per_event(charge, metric)))
        self.charges: tuple[QueryCharge, ...] = tuple(charges)

    def run(self, reader: Warehouse, windows: Sequence[UsageWindow]) -> WindowUsage:
        """Usage per window id, in the shape `rate_subscription` takes, from one query; the
        windows the warehouse fails on are left out and named in `failed` (see _isolate)."""
        if not windows or not self.charges:
            return WindowUsage({w.window_id: {} for w in windows})
        for w in windows:
            if w.plan_code not in self.plans:
                raise UsageQueryError(f"window {w.window_id}: plan {w.plan_code!r} is not in this query's catalog")
        try:
            rows = reader.usage_rows(self, windows)
        except Exception as exc:  # noqa: BLE001 - any warehouse error: find the windows it comes from
            return self._isolate(reader, windows, exc)
        return WindowUsage(self.to_usage(rows, windows))

    def _isolate(self, reader: Warehouse, windows: Sequence[UsageWindow], first: Exception) -> WindowUsage:
        """Ask again in halves, down to single windows: the usage of every window that can be
        read, and the error of each one that cannot (or raise `first`, see _MAX_FAILED)."""
        usage = WindowUsage()
        # Groups still to read, each with its error if it is known to fail; depth first.
        pending: list[tuple[Sequence[UsageWindow], Exception | None]] = [(windows, first)]
        while pending:
            group, error = pending.pop()
            if error is None:
                try:
                    rows = reader.usage_rows(self, group)
                except Exception as exc:  # noqa: BLE001 - as in run
                    error = exc
                else:
                    usage.update(self.to_usage(rows, group))
                    continue
            if len(group) > 1:
                half = len(group) // 2
                pending += [(group[half:], None), (group[:half], None)]
                continue
            usage.failed[group[0].window_id] = _describe(error)
            nothing_read = not usage and len(usage.failed) >= _FIRST_FAILURES_TO_GIVE_UP
            if nothing_read or len(usage.failed) > _MAX_FAILED:
                raise first
        subscription_of = {w.window_id: w.external_subscription_id for w in windows}
        for window_id, error in usage.failed.items():
            logs.event(_log, "usage not read for one window", 40, window_id=window_id,
                       external_subscription_id=subscription_of[window_id], error=error)
        return usage

    def to_usage(self, rows: Iterable[UsageRow], windows: Sequence[UsageWindow]) -> dict[str, dict[UsageKey, ChargeUsage]]:
        window_of = {w.window_id: w for w in windows}
        charge_of = {(c.plan_code, c.charge.ref): c for c in self.charges}
        grouped: dict[tuple[str, str, str], list[UsageRow]] = defaultdict(list)
        for row in rows:
            grouped[(row.window_id, row.charge_ref, row.bucket)].append(row)
        usage: dict[str, dict[UsageKey, ChargeUsage]] = {w.window_id: {} for w in windows}
        for (window_id, ref, bucket), group in grouped.items():
            window = window_of[window_id]
            charge = charge_of[(window.plan_code, ref)]
            usage[window_id][(ref, bucket or None)] = _charge_usage(charge.metric, group, window)
        return usage


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _dec(value: Decimal | None) -> Decimal:
    return Decimal(0) if value is None else Decimal(value)


def _weighted_sum(rows: list[UsageRow], window: UsageWindow) -> Decimal:
    """Lago's weighted_sum: each event adds its value to a running total, and the units are
    that total's time-weighted average over the window (weighted by the microsecond; Lago
    weighs by the second, which differs only for events less than a second apart).

    For a recurring metric the events before the window set the total it starts with.
    """
    start, end = to_us(window.start), to_us(window.end)
    with localcontext() as ctx:
        # Exact area: a running total of NUMERIC's 38 digits times microseconds (14 digits) fits
        # 60 digits, where the default 28 would round the totals the numeric domain allows.
        ctx.prec = 60
        total = Decimal(0)
        area = Decimal(0)
        at = start
        for row in sorted(rows, key=lambda r: r.row_timestamp):
            when = max(to_us(row.row_timestamp), start)
            area += total * (when - at)
            at = when
            total += _dec(row.sum_value)
        area += total * (end - at)
        ctx.prec = 38
        return area / (end - start)


def _charge_usage(metric: BillableMetric, rows: list[UsageRow], window: UsageWindow) -> ChargeUsage:
    kind = metric.aggregation_type
    if kind == "weighted_sum":
        events = sum(r.events_count for r in rows if r.row_timestamp >= window.start)
        return ChargeUsage(units=metric.round_units(_weighted_sum(rows, window)), events_count=events)
    if metric.recurring and kind == "unique_count":
        seats = tuple(
            SeatEvent(r.row_value, "remove" if r.row_operation == "remove" else "add", r.row_timestamp)
            for r in sorted(rows, key=lambda r: r.row_timestamp)
            if r.row_value is not None
        )
        return ChargeUsage(seat_events=seats)
    events = sum(r.events_count for r in rows)
    if any(r.row_key is not None for r in rows):
        values = tuple(_dec(r.sum_value) for r in sorted(rows, key=lambda r: r.row_timestamp))
        return ChargeUsage(units=metric.round_units(sum(values, Decimal(0))), events_count=events, event_values=values)
    (row,) = rows  # aggregated: one row per (window, charge, bucket)
    if kind == "count":
        units = Decimal(events)
    elif kind == "sum":
        units = _dec(row.sum_value)
    elif kind == "max":
        units = _dec(row.max_value)
    elif kind == "unique_count":
        units = Decimal(row.unique_count)
    else:  # latest
        units = _dec(row.latest_value)
    return ChargeUsage(units=metric.round_units(units), events_count=events)
