"""Usage for many (subscription, period) windows at once, from ONE warehouse query: the model.

This is the pure part: the typed request (the catalog's charges, the windows), the typed rows
the warehouse answers with, and the turning of those rows into rating's usage. The SQL that
answers it belongs to the adapters (`meterline.adapters.sql.usage`, behind
`UsageReader.usage_rows`), and asking the warehouse, window failures isolated, to the usage
service (`meterline.services.usage.read_usage`).

Each event joins its subscription's window and every charge of that window's plan on the
event's metric, lands in one bucket per charge (the most specific matching filter, else the
charge's own bucket, as Lago matches filters), and is aggregated per (window, charge, bucket).
Events that rating needs one by one (the add/remove events of a recurring unique_count metric,
the values of a weighted_sum metric, the per-transaction values of a percentage charge) come
back as their own rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, NamedTuple

from meterline.core.clock import to_us
from meterline.core.events import is_property_name, property_name_error
from meterline.core.pricing.usage import ChargeUsage, SeatEvent, UsageKey

if TYPE_CHECKING:
    # Types only: the process function reads `UsageRow` through the ports and never the catalog.
    from meterline.core.catalog import BillableMetric, Charge, ChargeModelName, Plan

_NEEDS_ROWS: tuple[ChargeModelName, ...] = ("percentage", "graduated_percentage")


# The reason a window of an `unusable` plan is flagged with (`WindowUsage.unbillable`).
UNUSABLE_PROPERTY_NAME = "unusable_property_name"


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


class UsageRow(NamedTuple):
    """One row of the usage query: the aggregates of one (window, charge, bucket), or, when the
    charge needs its events one by one, of one event of it (`row_key` is then its transaction_id).

    A NamedTuple: a billing run reads thousands of them.
    """

    window_id: str
    charge_ref: str
    bucket: str  # the matching filter's key; '' for the charge's own bucket
    row_key: str | None
    events_count: int
    sum_value: Decimal | None  # None: no numeric value
    max_value: Decimal | None
    unique_count: int  # distinct values of the metric's field (unique_count charges; 0 for the others)
    latest_value: Decimal | None  # the value of the latest event
    row_value: str | None  # the field's text (the smallest one when aggregated)
    row_operation: str | None  # a seat event's `operation_type` (add/remove); None for other metrics
    row_timestamp: datetime  # the earliest event's time, timezone-aware


class WindowUsage(dict[str, dict[UsageKey, ChargeUsage]]):
    """Usage per window id, in the shape `rate_subscription` takes, for every window but the
    ones in `failed` (window id -> the warehouse's error, type and message). Those failed for
    their own catalog, not the warehouse, are also in `unbillable` (window id -> the reason, a
    Lago-style code such as `unusable_property_name`)."""

    def __init__(self, usage: Mapping[str, dict[UsageKey, ChargeUsage]] | None = None,
                 failed: Mapping[str, str] | None = None):
        super().__init__(usage or {})
        self.failed: dict[str, str] = dict(failed or {})
        self.unbillable: dict[str, str] = {}


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
    """The request for one catalog; `to_usage` turns the warehouse's rows into rating's usage."""

    def __init__(self, metrics: Mapping[str, BillableMetric], plans: Iterable[Plan]):
        self.metrics = dict(metrics)
        self.plans = {p.code: p for p in plans}
        # Plans whose charges read a property the SQL cannot (stored before the catalog refused
        # such names, `core.events.is_property_name`) -> why. They are left out of the query,
        # so that one plan's name never fails everyone's usage; their windows fail alone.
        self.unusable: dict[str, str] = {}
        charges = []
        for plan in self.plans.values():
            problem = self._unreadable(plan)
            if problem is not None:
                self.unusable[plan.code] = f"plan {plan.code}: {problem}"
                continue
            for charge in plan.charges:
                metric = self.metrics.get(charge.billable_metric_code or "")
                if metric is None:
                    raise UsageQueryError(f"plan {plan.code}: unknown billable metric {charge.billable_metric_code!r}")
                charges.append(QueryCharge(plan.code, charge, metric, _per_event(charge, metric)))
        self.charges: tuple[QueryCharge, ...] = tuple(charges)

    def _unreadable(self, plan: Plan) -> str | None:
        for charge in plan.charges:
            metric = self.metrics.get(charge.billable_metric_code or "")
            names = [key for f in charge.filters for key in f.values]
            if metric is not None and metric.field_name is not None:
                names.append(metric.field_name)
            for name in names:
                if not is_property_name(name):
                    return property_name_error(name)
        return None

    def unbillable(self, windows: Sequence[UsageWindow]) -> dict[str, str]:
        """The windows whose plan is `unusable` -> why."""
        return {w.window_id: self.unusable[w.plan_code] for w in windows if w.plan_code in self.unusable}

    def check(self, windows: Sequence[UsageWindow]) -> None:
        """Raise UsageQueryError if a window's plan is not in this query's catalog."""
        for w in windows:
            if w.plan_code not in self.plans:
                raise UsageQueryError(f"window {w.window_id}: plan {w.plan_code!r} is not in this query's catalog")

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
