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
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from meterline.core.money import MONEY_CONTEXT
from meterline.core.pricing.periods import Period, local_date
from meterline.core.pricing.usage import SeatEvent

if TYPE_CHECKING:
    from meterline.core.catalog import Subscription  # types only, as in periods

__all__ = [
    "SeatProration",
    "SeatUsage",
    "active_dates",
    "base_fee_days",
    "billable_days",
    "day_ratio",
    "prorate_seats",
    "seat_units",
]

_ONE_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


def active_dates(period: Period, subscription: Subscription, zone) -> tuple[date, date] | None:
    """First and last local dates of `period` billed to `subscription`, or None if none are."""
    start = subscription.start
    # (no time zone conversion for the usual record that started before the period)
    first = period.start_date if start <= period.start_utc else local_date(start, zone)
    if first < period.start_date:
        first = period.start_date
    last = period.end_date
    end = subscription.end
    if end is not None and end < period.end_utc:
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

    The trial covers the first `trial_period_days` local dates from subscription_at (day
    granularity, like every other proration here). subscription_at, not started_at, because
    an upgrade starts a new record but must not restart the trial.
    """
    return billable_days(active_dates(period, subscription, zone), subscription, trial_period_days, zone)


def billable_days(window: tuple[date, date] | None, subscription: Subscription, trial_period_days: int, zone) -> int:
    """base_fee_days for already computed active dates (rating computes them once)."""
    if window is None:
        return 0
    first, last = window
    if trial_period_days:
        trial_last = local_date(subscription.subscription_at, zone) + timedelta(days=trial_period_days - 1)
        if trial_last >= first:
            first = trial_last + _ONE_DAY
    return max((last - first).days + 1, 0)


def day_ratio(days: int, period: Period) -> Decimal:
    """days / period.days, precise (50 digits), exactly 1 for a full period."""
    if days == period.days:
        return Decimal(1)
    return MONEY_CONTEXT.divide(Decimal(days), Decimal(period.days))


class SeatUsage(NamedTuple):
    """One seat's activity in a period (a NamedTuple: there is one per seat per invoice)."""

    value: str
    active_days: int


@dataclass(frozen=True, slots=True)
class SeatProration:
    """Seats of one period: prorated units (seat-days / period days) and full units (seats
    active at any time in the period, what a non-prorated charge bills)."""

    seats: tuple[SeatUsage, ...]
    period_days: int
    seat_days: int

    @property
    def prorated_units(self) -> Decimal:
        # One division for the total, so a full period of n seats is exactly n.
        return MONEY_CONTEXT.divide(Decimal(self.seat_days), Decimal(self.period_days))

    @property
    def full_units(self) -> Decimal:
        return Decimal(len(self.seats))


_timestamp = itemgetter(2)


def _seat_days(events, period: Period, zone, window: tuple[date, date] | None) -> dict[str, int]:
    """Active days per value (only values with at least one day). The loop of prorate_seats,
    shared with rating, which needs only the totals. It runs once per seat event of every
    subscription in a billing run, hence one pass and integer day numbers (ordinals)."""
    first_date, last_date = window if window is not None else (period.start_date, period.end_date)
    first, last = first_date.toordinal(), last_date.toordinal()
    start_utc, end_utc = period.start_utc, period.end_utc
    before = first - 1  # any day before the window: it is clipped to `first` anyway

    open_since: dict[str, int] = {}  # value -> local day it was added
    counted_to: dict[str, int] = {}  # value -> last day already counted
    days: dict[str, int] = {}

    def count(value: str, since: int, stop: int) -> None:
        """Add the days of one span [since, stop], clipped to the window."""
        start = since if since > first else first
        # A value's spans come in time order and can only share a day (removed and re-added
        # the same day): count that day once.
        done = counted_to.get(value)
        if done is not None and start <= done:
            start = done + 1
        if start <= stop:
            days[value] = days.get(value, 0) + stop - start + 1
            counted_to[value] = stop
    # (value, operation_type, timestamp): SeatEvents and plain tuples alike
    for value, operation_type, timestamp in sorted(events, key=_timestamp):
        if timestamp >= end_utc:
            break  # sorted: everything after is after the period too
        # seats carried over from earlier periods need no time zone conversion
        day = before if timestamp < start_utc else timestamp.astimezone(zone).toordinal()
        if operation_type == "add":
            if value not in open_since:
                open_since[value] = day
        elif operation_type == "remove":
            since = open_since.pop(value, None)
            if since is not None and day >= first:
                count(value, since, day if day < last else last)
        else:
            raise ValueError(f"operation_type must be add or remove, got {operation_type!r}")
    for value, since in open_since.items():  # still active at the end of the window
        count(value, since, last)
    return days


def prorate_seats(
    events: Iterable[SeatEvent | tuple[str, str, datetime]],
    period: Period,
    zone,
    window: tuple[date, date] | None = None,
) -> SeatProration:
    """Active days of each unique value in `period` from its add/remove events.

    `events` (timezone-aware timestamps) may start before the period (they decide which
    seats are active on its first day) and may be unordered. A repeated add of an active
    value, or a remove of an inactive one, changes nothing (retries and replays are
    harmless). `window` narrows the billed dates, e.g. to the subscription's active dates.
    """
    days = _seat_days(events, period, zone, window)
    seats = tuple(SeatUsage(value, active) for value, active in days.items())
    return SeatProration(seats, period.days, sum(days.values()))


def seat_units(
    events: Iterable[SeatEvent | tuple[str, str, datetime]],
    period: Period,
    zone,
    window: tuple[date, date] | None = None,
) -> tuple[Decimal, Decimal]:
    """(prorated units, full units) of prorate_seats, without building per-seat details."""
    days = _seat_days(events, period, zone, window)
    seat_days = sum(days.values())
    full = Decimal(len(days))
    if seat_days == len(days) * period.days:
        return full, full  # every seat was there all period: exact, and no division
    return MONEY_CONTEXT.divide(Decimal(seat_days), Decimal(period.days)), full
