"""Billing periods, cut at midnight in the customer's timezone.

Lago's rule: a period runs from the start of its first day to the end of its last day in the
customer's timezone, inclusive, converted to UTC. Here a period keeps both views:
- `start_date`/`end_date`: the customer's local dates, end inclusive (what an invoice prints
  and what proration counts);
- `start_utc`/`end_utc`: a half-open UTC interval [start_utc, end_utc), where end_utc is the
  local midnight that starts the day after end_date. Half-open intervals tile time with no
  gap and no overlap, so "event in period" is `start_utc <= ts < end_utc` with no 23:59:59.999
  guesswork; Lago's inclusive end is `end_utc` minus one second (`lago_to_datetime`).

Calendar periods are aligned to the calendar (weeks start on Monday, quarters in Jan/Apr/Jul/
Oct). Anniversary periods start on the subscription's local date: a subscription on the 31st
bills on the last day of shorter months and on the 31st again when the month has one, and a
yearly one from Feb 29 renews on Feb 28 in common years.
"""

from __future__ import annotations

from calendar import isleap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    # Types only: pricing reads catalog objects but never needs the catalog loaded (the catalog
    # imports the charge models, so a runtime import would make the two packages a cycle).
    from meterline.core.catalog import Customer, Plan, Subscription

__all__ = [
    "MONTHS_PER_INTERVAL",
    "BillingSchedule",
    "Period",
    "charges_window",
    "closed_periods_between",
    "local_date",
    "local_midnight_utc",
    "next_period",
    "period_containing",
    "period_for_date",
]

# Whole months per billing interval (weekly has none: it counts in days).
MONTHS_PER_INTERVAL = {"monthly": 1, "quarterly": 3, "semiannual": 6, "yearly": 12}

# Anchors for calendar billing: month-based periods count from Jan 1, weeks from a Monday.
_CALENDAR_MONTH_ANCHOR = date(2000, 1, 1)
_CALENDAR_WEEK_ANCHOR = date(2000, 1, 3)  # a Monday
_ONE_DAY = timedelta(days=1)


def local_midnight_utc(day: date, zone: ZoneInfo) -> datetime:
    """The UTC instant at which `day` begins in `zone`.

    If a DST jump skips midnight (e.g. America/Santiago, Asia/Beirut), zoneinfo reads the
    missing 00:00 with the offset in force before the jump, which is exactly the instant the
    day begins.
    """
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    """The customer's calendar date at `instant` (which must be timezone-aware)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(zone).date()


@dataclass(frozen=True, slots=True)
class Period:
    """One billing period: local dates [start_date, end_date] = UTC [start_utc, end_utc)."""

    start_date: date
    end_date: date  # inclusive
    start_utc: datetime
    end_utc: datetime  # exclusive
    timezone: str
    interval: str
    days: int  # local days in the period: the proration denominator

    @property
    def lago_to_datetime(self) -> datetime:
        """Lago's inclusive end of period (the last second of end_date)."""
        return self.end_utc - timedelta(seconds=1)

    def contains(self, instant: datetime) -> bool:
        return self.start_utc <= instant < self.end_utc


def charges_window(period: Period, subscription: Subscription) -> tuple[datetime, datetime]:
    """The UTC part [start, end) of `period` in which `subscription` (one record) is billed for
    usage: Lago's charges_from_datetime / charges_to_datetime. It starts at the record's start
    instant if that is later than the period's (not at the start of that day: usage timed
    before the subscription existed is not its usage), and ends at its termination or
    scheduled end if that is earlier. The two records of an upgrade inside a period tile it at
    the switch instant. Empty (end == start) if the record is not active in the period.
    """
    start, end = subscription.start, subscription.end
    if start < period.start_utc:
        start = period.start_utc
    if end is None or end > period.end_utc:
        end = period.end_utc
    return start, (end if end > start else start)


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _add_months(anchor: date, months: int) -> date:
    """anchor + months, clamping the day to the month's end (Jan 31 + 1 month = Feb 28/29),
    always from the original anchor so that Mar 31 follows Feb 28, not Mar 28."""
    year, month0 = divmod(anchor.month - 1 + months, 12)
    year += anchor.year
    day = anchor.day
    if day > 28:  # only then can the month be too short (calendar.monthrange is slow)
        last = 29 if month0 == 1 and isleap(year) else _MONTH_DAYS[month0]
        day = min(day, last)
    return date(year, month0 + 1, day)


class BillingSchedule(NamedTuple):
    """Everything that decides a subscription's periods: interval, calendar or anniversary,
    the anniversary date and the customer's timezone. Cheap to build; build it once per
    subscription and reuse it for every period. (A NamedTuple: it keys the period cache, and
    tuples hash in C.)"""

    interval: str
    billing_time: str
    anchor: date  # local date of subscription_at (only used for anniversary billing)
    zone: ZoneInfo

    @classmethod
    def of(cls, subscription: Subscription, plan: Plan, customer: Customer) -> BillingSchedule:
        zone = customer.zone
        if subscription.billing_time != "anniversary":
            # Calendar periods do not depend on the subscription date; one anchor for all
            # makes equal schedules equal, so they share cached periods.
            return cls(plan.interval, "calendar", _CALENDAR_MONTH_ANCHOR, zone)
        # NOTE: anniversary dates come from subscription_at, which an upgrade carries over to
        # the new record (Lago does the same), so switching plans keeps the billing day.
        return cls(plan.interval, "anniversary", local_date(subscription.subscription_at, zone), zone)

    def _boundary(self, k: int) -> date:
        """Start date of the k-th period counted from the anchor."""
        if self.interval == "weekly":
            anchor = self.anchor if self.billing_time == "anniversary" else _CALENDAR_WEEK_ANCHOR
            return anchor + timedelta(weeks=k)
        anchor = self.anchor if self.billing_time == "anniversary" else _CALENDAR_MONTH_ANCHOR
        return _add_months(anchor, k * MONTHS_PER_INTERVAL[self.interval])

    def _index_of(self, day: date) -> int:
        if self.interval == "weekly":
            anchor = self.anchor if self.billing_time == "anniversary" else _CALENDAR_WEEK_ANCHOR
            return (day - anchor).days // 7
        anchor = self.anchor if self.billing_time == "anniversary" else _CALENDAR_MONTH_ANCHOR
        months = (day.year - anchor.year) * 12 + day.month - anchor.month
        k = months // MONTHS_PER_INTERVAL[self.interval]
        # The estimate can be one off when the day of month is before the anchor's day.
        while self._boundary(k) > day:
            k -= 1
        while self._boundary(k + 1) <= day:
            k += 1
        return k

    def _period(self, k: int) -> Period:
        start = self._boundary(k)
        after = self._boundary(k + 1)
        return Period(
            start_date=start,
            end_date=after - _ONE_DAY,
            start_utc=local_midnight_utc(start, self.zone),
            end_utc=local_midnight_utc(after, self.zone),
            timezone=self.zone.key,
            interval=self.interval,
            days=(after - start).days,
        )


@lru_cache(maxsize=65536)
def period_for_date(schedule: BillingSchedule, day: date) -> Period:
    """The period holding the customer's local date `day`.

    Cached: a billing run asks the same question for thousands of subscriptions that share
    a schedule (calendar billing in one timezone), and the answer never changes.
    """
    return schedule._period(schedule._index_of(day))


def period_containing(schedule: BillingSchedule, instant: datetime) -> Period:
    """The period holding `instant` (timezone-aware)."""
    return period_for_date(schedule, _local_day(instant, schedule.zone))


@lru_cache(maxsize=1024)
def _local_day(instant: datetime, zone: ZoneInfo) -> date:
    # A billing run asks for the period of thousands of subscriptions at one instant, in a
    # handful of time zones.
    return local_date(instant, zone)


def next_period(schedule: BillingSchedule, period: Period) -> Period:
    """The period right after `period`: it starts where `period` ends."""
    return period_for_date(schedule, period.end_date + _ONE_DAY)


def closed_periods_between(
    schedule: BillingSchedule, subscription: Subscription, since: datetime, until: datetime
) -> Iterator[Period]:
    """Periods a billing run over (since, until] must invoice, oldest first.

    A period closes at its end, or earlier when the subscription ends inside it (Lago
    invoices a terminated subscription at once). A period is yielded if it overlaps the
    subscription's life and closes after `since` and no later than `until`, so consecutive
    runs over adjacent windows invoice every period exactly once.
    """
    start, end = subscription.start, subscription.end
    if end is not None and end <= max(start, since):
        return  # ended before it began, or already closed before this run's window
    period = period_containing(schedule, max(start, since))
    while period.start_utc < until and (end is None or period.start_utc < end):
        closes_at = period.end_utc if end is None else min(period.end_utc, end)
        if since < closes_at <= until:
            yield period
        period = next_period(schedule, period)
