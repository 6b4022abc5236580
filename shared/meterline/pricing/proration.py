"""Proration by days, in the customer's timezone (Lago's rule: amount x active days / days).

Days are the unit because invoices print dates, and customers check "15 of 30 days" by
counting dates, not hours. Two rules decide which local dates a subscription is billed for:
- the start date is billed in full, whatever the time of day it started;
- the last billed date is the one holding the end instant, except when the subscription was
  replaced by another plan (an upgrade): that day belongs to the new plan, so the switch day
  is not billed twice. An end exactly at midnight bills nothing of the next day.

Seats (a recurring unique_count metric with add/remove events) are prorated the same way:
each value is billed for the local dates on which it was active, the add date and the
remove date included (Lago: a user added on Sep 15 is billed Sep 15-30; removed on Oct 22,
Oct 1-22).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from meterline.catalog import Subscription
from meterline.money import MONEY_CONTEXT
from meterline.pricing.periods import Period, local_date
from meterline.pricing.usage import SeatEvent

__all__ = [
    "SeatProration",
    "SeatUsage",
    "active_dates",
    "base_fee_days",
    "day_ratio",
    "prorate_seats",
]

_ONE_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


def active_dates(period: Period, subscription: Subscription, zone) -> tuple[date, date] | None:
    """First and last local dates of `period` billed to `subscription`, or None if none are."""
    first = local_date(subscription.start, zone)
    if first < period.start_date:
        first = period.start_date
    last = period.end_date
    end = subscription.end
    if end is not None:
        if subscription.terminated_at is not None and subscription.next_plan_code is not None:
            # replaced by an upgrade at `end`: the switch day is billed on the new plan
            last_billed = local_date(end, zone) - _ONE_DAY
        else:
            last_billed = local_date(end - _TINY, zone)
        if last_billed < last:
            last = last_billed
    if first > last:
        return None
    return first, last


def base_fee_days(period: Period, subscription: Subscription, trial_period_days: int, zone) -> int:
    """Days of `period` on which the base fee is due: active days outside the free trial.

    The trial covers the first `trial_period_days` local dates from the start date (day
    granularity, like every other proration here).
    """
    dates = active_dates(period, subscription, zone)
    if dates is None:
        return 0
    first, last = dates
    if trial_period_days and subscription.started_at is not None:
        trial_last = local_date(subscription.started_at, zone) + timedelta(days=trial_period_days - 1)
        if trial_last >= first:
            first = trial_last + _ONE_DAY
    return max((last - first).days + 1, 0)


def day_ratio(days: int, period: Period) -> Decimal:
    """days / period.days, precise (50 digits), exactly 1 for a full period."""
    if days == period.days:
        return Decimal(1)
    return MONEY_CONTEXT.divide(Decimal(days), Decimal(period.days))


@dataclass(frozen=True, slots=True)
class SeatUsage:
    """One seat's activity in a period."""

    value: str
    active_days: int


@dataclass(frozen=True, slots=True)
class SeatProration:
    """Seats of one period: prorated units (seat-days / period days) and full units (seats
    active at any time in the period, what a non-prorated charge bills)."""

    seats: tuple[SeatUsage, ...]
    period_days: int

    @property
    def seat_days(self) -> int:
        return sum(seat.active_days for seat in self.seats)

    @property
    def prorated_units(self) -> Decimal:
        # One division for the total, so a full period of n seats is exactly n.
        return MONEY_CONTEXT.divide(Decimal(self.seat_days), Decimal(self.period_days))

    @property
    def full_units(self) -> Decimal:
        return Decimal(sum(1 for seat in self.seats if seat.active_days))


def prorate_seats(
    events: Iterable[SeatEvent | tuple[str, str, object]],
    period: Period,
    zone,
    window: tuple[date, date] | None = None,
) -> SeatProration:
    """Active days of each unique value in `period` from its add/remove events.

    `events` may start before the period (they decide which seats are active on its first
    day) and may be unordered. A repeated add of an active value, or a remove of an inactive
    one, changes nothing (retries and replays are harmless). `window` narrows the billed
    dates, e.g. to the subscription's active dates.
    """
    first, last = window if window is not None else (period.start_date, period.end_date)
    normalized = [e if isinstance(e, SeatEvent) else SeatEvent(*e) for e in events]
    normalized = [e for e in normalized if e.timestamp < period.end_utc]
    normalized.sort(key=lambda e: e.timestamp)

    open_since: dict[str, date] = {}
    spans: dict[str, list[tuple[date, date]]] = {}
    for event in normalized:
        day = local_date(event.timestamp, zone)
        if event.operation_type == "add":
            if event.value not in open_since:
                open_since[event.value] = day
                spans.setdefault(event.value, [])
        elif event.operation_type == "remove":
            since = open_since.pop(event.value, None)
            if since is not None:
                spans[event.value].append((since, day))
        else:
            raise ValueError(f"operation_type must be add or remove, got {event.operation_type!r}")
    for value, since in open_since.items():
        spans[value].append((since, last))

    seats = []
    for value, value_spans in spans.items():
        days = _union_days(value_spans, first, last)
        if days:
            seats.append(SeatUsage(value, days))
    return SeatProration(tuple(seats), period.days)


def _union_days(spans: list[tuple[date, date]], first: date, last: date) -> int:
    """Number of dates in [first, last] covered by at least one inclusive span."""
    clipped = sorted((max(a, first), min(b, last)) for a, b in spans if b >= first and a <= last)
    days = 0
    cursor: date | None = None  # last date already counted
    for a, b in clipped:
        if cursor is not None and a <= cursor:
            a = cursor + _ONE_DAY
        if a <= b:
            days += (b - a).days + 1
            cursor = b
    return days
