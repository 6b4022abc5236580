"""Usage for many (subscription, period) windows at once, from ONE query over `events_deduped`.

The SQL is written once, in BigQuery's dialect, and runs on DuckDB through sqlglot (see
`meterline.adapters.sql.to_duckdb`). A billing run passes thousands of windows as array parameters,
so the query text does not grow with the number of subscriptions; it grows only with the
catalog (one CASE branch per charge filter), which is small.

Each event joins its subscription's window and every charge of that window's plan on the
event's metric, lands in one bucket per charge (the most specific matching filter, else the
charge's own bucket, as Lago matches filters), and is aggregated per (window, charge, bucket).
Events that rating needs one by one (the add/remove events of a recurring unique_count metric,
the per-transaction values of a percentage charge) keep their own row, keyed by
transaction_id, in the same query.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, localcontext
from typing import Any

from sqlglot import exp

from meterline.core.catalog import BillableMetric, Charge, ChargeFilter, Plan
from meterline.core.pricing.usage import ChargeUsage, SeatEvent, UsageKey

_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_EPOCH_US = 0
_NEEDS_ROWS = ("percentage", "graduated_percentage")


# NOTE: NUMERIC(38, 9) is BigQuery's NUMERIC spelled out. Plain NUMERIC would be as exact on
# BigQuery, but a transpiler reads it as DECIMAL(18, 3) (bqemulator does), and quantities
# with more than three decimals would be truncated without a word.


class UsageQueryError(ValueError):
    """The catalog holds something the usage query cannot aggregate (the message says what)."""


@dataclass(frozen=True)
class UsageWindow:
    """One subscription's slice of time to aggregate, [start, end), under one plan."""

    window_id: str
    external_subscription_id: str
    plan_code: str
    start: datetime
    end: datetime


def _lit(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="bigquery")


def _json_path(field: str) -> str:
    if not _SAFE_NAME.fullmatch(field):
        raise UsageQueryError(f"property name {field!r} must match {_SAFE_NAME.pattern} to be aggregated")
    return _lit(f"$.{field}")


def _us(value: datetime) -> int:
    if value.tzinfo is None:
        raise UsageQueryError("window bounds must be timezone-aware")
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _filter_condition(flt: ChargeFilter) -> str:
    parts = [
        f"JSON_VALUE(e.properties, {_json_path(key)}) IN ({', '.join(_lit(v) for v in sorted(values))})"
        for key, values in sorted(flt.values.items())
    ]
    return " AND ".join(parts)


def _needs_rows(charge: Charge, metric: BillableMetric) -> bool:
    if metric.aggregation_type == "weighted_sum" or (metric.recurring and metric.aggregation_type == "unique_count"):
        return True
    if charge.charge_model not in _NEEDS_ROWS:
        return False
    props = [charge.properties, *(f.properties for f in charge.filters)]
    return any(getattr(p, "needs_event_values", False) for p in props)


class UsageQuery:
    """The query for one catalog; `run` binds the windows and turns rows into rating's usage."""

    def __init__(self, metrics: Mapping[str, BillableMetric], plans: Iterable[Plan]):
        self.metrics = dict(metrics)
        self.plans = {p.code: p for p in plans}
        self._charges: list[tuple[str, Charge, BillableMetric]] = []
        for plan in self.plans.values():
            for charge in plan.charges:
                metric = self.metrics.get(charge.billable_metric_code or "")
                if metric is None:
                    raise UsageQueryError(f"plan {plan.code}: unknown billable metric {charge.billable_metric_code!r}")
                self._charges.append((plan.code, charge, metric))
        self.sql = self._build()

    def _build(self) -> str:
        used = {m.code: m for _, _, m in self._charges}
        value_cases = " ".join(
            f"WHEN {_lit(code)} THEN JSON_VALUE(e.properties, {_json_path(m.field_name)})"
            for code, m in sorted(used.items())
            if m.field_name
        )
        value_text = f"CASE e.code {value_cases} END" if value_cases else "CAST(NULL AS STRING)"
        bucket_cases, row_cases = [], []
        for plan_code, charge, metric in self._charges:
            owner = f"c.plan_code = {_lit(plan_code)} AND c.charge_ref = {_lit(charge.ref)}"
            # NOTE: Lago bills an event under the matching filter with the most keys; events
            # that match no filter fall into the charge's own bucket.
            for flt in sorted(charge.filters, key=lambda f: (-len(f.values), f.key)):
                bucket_cases.append(f"WHEN {owner} AND {_filter_condition(flt)} THEN {_lit(flt.key)}")
            if _needs_rows(charge, metric):
                row_cases.append(owner)
        bucket = f"CASE {' '.join(bucket_cases)} ELSE '' END" if bucket_cases else "''"
        row_key = f"IF(({') OR ('.join(row_cases)}), e.transaction_id, NULL)" if row_cases else "CAST(NULL AS STRING)"
        recurring = sorted(code for code, m in used.items() if m.recurring)
        # Recurring metrics carry over: their events count from the beginning of time.
        start = (
            f"IF(e.code IN ({', '.join(_lit(c) for c in recurring)}), TIMESTAMP_MICROS({_EPOCH_US}), w.start_at)"
            if recurring
            else "w.start_at"
        )
        return f"""
WITH windows AS (
  SELECT w.window_id, w.sub, w.plan_code, TIMESTAMP_MICROS(w.start_us) AS start_at, TIMESTAMP_MICROS(w.end_us) AS end_at
  FROM UNNEST(@windows) AS w
),
charges AS (
  SELECT c.plan_code, c.charge_ref, c.metric_code
  FROM UNNEST(@charges) AS c
),
matched AS (
  SELECT
    w.window_id,
    c.charge_ref,
    {bucket} AS bucket,
    {row_key} AS row_key,
    e.timestamp,
    {value_text} AS value_text,
    JSON_VALUE(e.properties, '$.operation_type') AS operation_type
  FROM windows AS w
  JOIN events_deduped AS e
    ON e.external_subscription_id = w.sub
   AND e.timestamp < w.end_at
  JOIN charges AS c
    ON c.plan_code = w.plan_code
   AND c.metric_code = e.code
  WHERE e.timestamp >= {start}
)
SELECT
  window_id,
  charge_ref,
  bucket,
  row_key,
  COUNT(*) AS events_count,
  SUM(SAFE_CAST(value_text AS NUMERIC(38, 9))) AS sum_value,
  MAX(SAFE_CAST(value_text AS NUMERIC(38, 9))) AS max_value,
  COUNT(DISTINCT value_text) AS unique_count,
  MAX_BY(SAFE_CAST(value_text AS NUMERIC(38, 9)), timestamp) AS latest_value,
  MIN(value_text) AS row_value,
  MIN(operation_type) AS row_operation,
  MIN(timestamp) AS row_timestamp
FROM matched
GROUP BY window_id, charge_ref, bucket, row_key
"""

    def params(self, windows: Sequence[UsageWindow]) -> dict[str, Any]:
        for w in windows:
            if w.plan_code not in self.plans:
                raise UsageQueryError(f"window {w.window_id}: plan {w.plan_code!r} is not in this query's catalog")
        # Arrays of structs, not parallel arrays zipped by offset: one value per window keeps
        # the binding obviously right (and bqemulator mis-indexes `@array[OFFSET(pos)]`).
        return {
            "windows": [
                {"window_id": w.window_id, "sub": w.external_subscription_id, "plan_code": w.plan_code,
                 "start_us": _us(w.start), "end_us": _us(w.end)}
                for w in windows
            ],
            "charges": [{"plan_code": p, "charge_ref": c.ref, "metric_code": m.code} for p, c, m in self._charges],
        }

    def run(self, warehouse, windows: Sequence[UsageWindow]) -> dict[str, dict[UsageKey, ChargeUsage]]:
        """Usage per window id, in the shape `rate_subscription` takes."""
        if not windows or not self._charges:
            return {w.window_id: {} for w in windows}
        rows = warehouse.query(self.sql, self.params(windows))
        return self.to_usage(rows, windows)

    def to_usage(self, rows: Iterable[Mapping[str, Any]], windows: Sequence[UsageWindow]) -> dict[str, dict[UsageKey, ChargeUsage]]:
        window_of = {w.window_id: w for w in windows}
        charge_of = {(p, c.ref): (c, m) for p, c, m in self._charges}
        grouped: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
        for row in rows:
            grouped[(row["window_id"], row["charge_ref"], row["bucket"])].append(row)
        usage: dict[str, dict[UsageKey, ChargeUsage]] = {w.window_id: {} for w in windows}
        for (window_id, ref, bucket), group in grouped.items():
            window = window_of[window_id]
            charge, metric = charge_of[(window.plan_code, ref)]
            usage[window_id][(ref, bucket or None)] = _charge_usage(metric, charge, group, window)
        return usage


def _dec(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(value)


def _weighted_sum(rows: list[Mapping[str, Any]], window: UsageWindow) -> Decimal:
    """Lago's weighted_sum: each event adds its value to a running total, and the units are
    that total's time-weighted average over the window (weighted by the microsecond; Lago
    weighs by the second, which differs only for events less than a second apart).

    For a recurring metric the events before the window set the total it starts with.
    """
    start, end = _us(window.start), _us(window.end)
    total = Decimal(0)
    area = Decimal(0)
    at = start
    for row in sorted(rows, key=lambda r: _aware(r["row_timestamp"])):
        when = max(_us(_aware(row["row_timestamp"])), start)
        area += total * (when - at)
        at = when
        total += _dec(row["sum_value"])
    area += total * (end - at)
    with localcontext() as ctx:
        ctx.prec = 38
        return area / (end - start)


def _charge_usage(metric: BillableMetric, charge: Charge, rows: list[Mapping[str, Any]], window: UsageWindow) -> ChargeUsage:
    kind = metric.aggregation_type
    if kind == "weighted_sum":
        events = sum(int(r["events_count"]) for r in rows if _aware(r["row_timestamp"]) >= window.start)
        return ChargeUsage(units=metric.round_units(_weighted_sum(rows, window)), events_count=events)
    if metric.recurring and kind == "unique_count":
        seats = tuple(
            SeatEvent(str(r["row_value"]), "remove" if r["row_operation"] == "remove" else "add", _aware(r["row_timestamp"]))
            for r in sorted(rows, key=lambda r: _aware(r["row_timestamp"]))
            if r["row_value"] is not None
        )
        return ChargeUsage(seat_events=seats)
    events = sum(int(r["events_count"]) for r in rows)
    if any(r["row_key"] is not None for r in rows):
        values = tuple(_dec(r["sum_value"]) for r in sorted(rows, key=lambda r: _aware(r["row_timestamp"])))
        return ChargeUsage(units=metric.round_units(sum(values, Decimal(0))), events_count=events, event_values=values)
    (row,) = rows  # aggregated: one row per (window, charge, bucket)
    if kind == "count":
        units = Decimal(events)
    elif kind == "sum":
        units = _dec(row["sum_value"])
    elif kind == "max":
        units = _dec(row["max_value"])
    elif kind == "unique_count":
        units = Decimal(int(row["unique_count"]))
    else:  # latest
        units = _dec(row["latest_value"])
    return ChargeUsage(units=metric.round_units(units), events_count=events)


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
