"""Billing periods: calendar and anniversary, month ends, leap years, DST and extreme offsets."""

from calendar import monthrange
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.catalog import Subscription
from meterline.core.pricing.periods import (
    BillingSchedule,
    closed_periods_between,
    local_midnight_utc,
    next_period,
    period_containing,
    period_for_date,
)


def schedule(interval="monthly", billing_time="calendar", anchor=date(2024, 1, 1), tz="UTC"):
    return BillingSchedule(interval, billing_time, anchor, ZoneInfo(tz))


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def dates(period):
    return period.start_date, period.end_date


@pytest.mark.parametrize(
    ("interval", "day", "expected"),
    [
        ("monthly", date(2024, 2, 15), (date(2024, 2, 1), date(2024, 2, 29))),
        ("monthly", date(2023, 2, 1), (date(2023, 2, 1), date(2023, 2, 28))),
        ("monthly", date(2024, 12, 31), (date(2024, 12, 1), date(2024, 12, 31))),
        ("weekly", date(2024, 1, 10), (date(2024, 1, 8), date(2024, 1, 14))),  # Monday to Sunday
        ("weekly", date(2024, 1, 8), (date(2024, 1, 8), date(2024, 1, 14))),
        ("quarterly", date(2024, 5, 20), (date(2024, 4, 1), date(2024, 6, 30))),
        ("semiannual", date(2024, 9, 1), (date(2024, 7, 1), date(2024, 12, 31))),
        ("yearly", date(2024, 7, 4), (date(2024, 1, 1), date(2024, 12, 31))),
    ],
)
def test_calendar_periods(interval, day, expected):
    period = period_for_date(schedule(interval), day)
    assert dates(period) == expected
    assert period.days == (expected[1] - expected[0]).days + 1


@pytest.mark.parametrize(
    ("anchor", "day", "expected"),
    [
        # the 31st bills on the last day of shorter months, and on the 31st again after
        (date(2024, 1, 31), date(2024, 2, 10), (date(2024, 1, 31), date(2024, 2, 28))),
        (date(2024, 1, 31), date(2024, 2, 29), (date(2024, 2, 29), date(2024, 3, 30))),  # leap year
        (date(2023, 1, 31), date(2023, 2, 28), (date(2023, 2, 28), date(2023, 3, 30))),
        (date(2024, 1, 31), date(2024, 3, 31), (date(2024, 3, 31), date(2024, 4, 29))),
        (date(2024, 1, 31), date(2024, 4, 30), (date(2024, 4, 30), date(2024, 5, 30))),
        (date(2024, 1, 30), date(2024, 2, 29), (date(2024, 2, 29), date(2024, 3, 29))),
        (date(2024, 1, 15), date(2024, 1, 14), (date(2023, 12, 15), date(2024, 1, 14))),
        (date(2024, 1, 15), date(2024, 1, 15), (date(2024, 1, 15), date(2024, 2, 14))),
    ],
)
def test_monthly_anniversary_month_ends(anchor, day, expected):
    assert dates(period_for_date(schedule("monthly", "anniversary", anchor), day)) == expected


def test_yearly_anniversary_from_feb_29():
    sched = schedule("yearly", "anniversary", date(2024, 2, 29))
    assert dates(period_for_date(sched, date(2024, 3, 1))) == (date(2024, 2, 29), date(2025, 2, 27))
    assert dates(period_for_date(sched, date(2025, 2, 28))) == (date(2025, 2, 28), date(2026, 2, 27))
    assert dates(period_for_date(sched, date(2028, 2, 29))) == (date(2028, 2, 29), date(2029, 2, 27))


def test_weekly_and_quarterly_anniversary():
    assert dates(period_for_date(schedule("weekly", "anniversary", date(2024, 1, 3)), date(2024, 1, 9))) == (
        date(2024, 1, 3),
        date(2024, 1, 9),
    )
    quarterly = schedule("quarterly", "anniversary", date(2023, 11, 30))
    assert dates(period_for_date(quarterly, date(2024, 3, 1))) == (date(2024, 2, 29), date(2024, 5, 29))


def test_periods_convert_local_midnights_to_utc_half_open():
    period = period_containing(schedule(tz="Europe/Paris"), utc(2024, 1, 15))
    assert period.start_utc == utc(2023, 12, 31, 23)
    assert period.end_utc == utc(2024, 1, 31, 23)
    assert period.lago_to_datetime == utc(2024, 1, 31, 22, 59, 59)
    assert period.contains(utc(2023, 12, 31, 23)) and not period.contains(period.end_utc)


def test_instant_near_midnight_falls_in_the_customer_local_day():
    tokyo = schedule(tz="Asia/Tokyo")
    # 2024-01-31 16:00 UTC is already Feb 1 in Tokyo
    assert dates(period_containing(tokyo, utc(2024, 1, 31, 16))) == (date(2024, 2, 1), date(2024, 2, 29))
    assert dates(period_containing(tokyo, utc(2024, 1, 31, 14, 59))) == (date(2024, 1, 1), date(2024, 1, 31))


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("America/New_York", date(2024, 3, 10), 23),  # spring forward
        ("America/New_York", date(2024, 11, 3), 25),  # fall back
        ("Europe/Berlin", date(2024, 3, 31), 23),
        ("Europe/Berlin", date(2024, 10, 27), 25),
    ],
)
def test_dst_days_are_one_local_day(tz, day, hours):
    sched = schedule("weekly", "anniversary", day, tz)
    period = period_for_date(sched, day)
    zone = ZoneInfo(tz)
    assert period.days == 7
    first_day_end = local_midnight_utc(day + timedelta(days=1), zone)
    assert first_day_end - period.start_utc == timedelta(hours=hours)


def test_monthly_period_across_dst_in_new_york():
    period = period_for_date(schedule(tz="America/New_York"), date(2024, 3, 15))
    assert period.start_utc == utc(2024, 3, 1, 5)  # EST
    assert period.end_utc == utc(2024, 4, 1, 4)  # EDT
    assert period.days == 31


def test_midnight_skipped_by_dst_starts_the_day_at_the_jump():
    # Santiago springs forward at 00:00 -> 01:00 on 2024-09-08: the day begins at 04:00 UTC
    start = local_midnight_utc(date(2024, 9, 8), ZoneInfo("America/Santiago"))
    assert start == utc(2024, 9, 8, 4)
    assert start.astimezone(ZoneInfo("America/Santiago")).hour == 1


@pytest.mark.parametrize(
    ("tz", "offset_hours"), [("Etc/GMT+12", -12), ("UTC", 0), ("Asia/Kolkata", 5.5), ("Pacific/Kiritimati", 14)]
)
def test_extreme_offsets(tz, offset_hours):
    period = period_for_date(schedule(tz=tz), date(2024, 6, 10))
    assert dates(period) == (date(2024, 6, 1), date(2024, 6, 30))
    assert period.start_utc == utc(2024, 6, 1) - timedelta(hours=offset_hours)
    # the same UTC instant is in different local months at both ends of the world
    instant = utc(2024, 6, 30, 13)
    assert period_containing(schedule(tz="Etc/GMT+12"), instant).start_date == date(2024, 6, 1)
    assert period_containing(schedule(tz="Pacific/Kiritimati"), instant).start_date == date(2024, 7, 1)


def test_next_period_tiles_time():
    sched = schedule("monthly", "anniversary", date(2024, 1, 31), "America/New_York")
    period = period_for_date(sched, date(2024, 1, 31))
    for _ in range(30):
        following = next_period(sched, period)
        assert following.start_utc == period.end_utc
        assert following.start_date == period.end_date + timedelta(days=1)
        period = following


@given(
    st.sampled_from(["weekly", "monthly", "quarterly", "semiannual", "yearly"]),
    st.sampled_from(["calendar", "anniversary"]),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    st.sampled_from(
        ["UTC", "America/New_York", "Europe/Berlin", "Etc/GMT+12", "Pacific/Kiritimati", "Australia/Lord_Howe"]
    ),
)
def test_every_date_is_in_exactly_the_period_found(interval, billing_time, anchor, day, tz):
    sched = schedule(interval, billing_time, anchor, tz)
    period = period_for_date(sched, day)
    assert period.start_date <= day <= period.end_date
    assert next_period(sched, period).start_utc == period.end_utc
    if billing_time == "anniversary" and interval != "weekly":
        month_days = monthrange(period.start_date.year, period.start_date.month)[1]
        assert period.start_date.day == min(anchor.day, month_days)
    if billing_time == "calendar" and interval != "weekly":
        assert period.start_date.day == 1
    if interval == "weekly":
        assert period.days == 7


def sub(**kw):
    base = {
        "external_id": "s1",
        "external_customer_id": "c1",
        "plan_code": "p",
        "subscription_at": utc(2024, 1, 15),
        "started_at": utc(2024, 1, 15),
    }
    return Subscription(**{**base, **kw})


def test_closed_periods_between_runs_each_period_once():
    sched = schedule()
    subscription = sub()
    runs = [utc(2024, 1, 20), utc(2024, 2, 1), utc(2024, 3, 15), utc(2024, 4, 1)]
    closed = []
    since = utc(2023, 1, 1)
    for until in runs:
        closed += [dates(p) for p in closed_periods_between(sched, subscription, since, until)]
        since = until
    assert closed == [
        (date(2024, 1, 1), date(2024, 1, 31)),
        (date(2024, 2, 1), date(2024, 2, 29)),
        (date(2024, 3, 1), date(2024, 3, 31)),
    ]


def test_terminated_subscription_closes_its_period_at_termination():
    terminated = sub(status="terminated", terminated_at=utc(2024, 3, 10, 12))
    found = list(closed_periods_between(schedule(), terminated, utc(2024, 3, 1), utc(2024, 3, 11)))
    assert [dates(p) for p in found] == [(date(2024, 3, 1), date(2024, 3, 31))]
    assert list(closed_periods_between(schedule(), terminated, utc(2024, 3, 11), utc(2024, 5, 1))) == []


def test_no_periods_before_the_subscription_starts():
    later = sub(subscription_at=utc(2024, 6, 1), started_at=utc(2024, 6, 1))
    assert list(closed_periods_between(schedule(), later, utc(2024, 1, 1), utc(2024, 6, 1))) == []
