"""Proration by local days: base fee (start, termination, upgrade, trial) and seats."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from meterline.core.catalog import Subscription
from meterline.core.pricing.periods import BillingSchedule, period_for_date
from meterline.core.pricing.proration import active_dates, base_fee_days, day_ratio, prorate_seats, seat_units
from meterline.core.pricing.usage import SeatEvent

D = Decimal
UTCZ = ZoneInfo("UTC")
APRIL = period_for_date(BillingSchedule("monthly", "calendar", date(2024, 1, 1), UTCZ), date(2024, 4, 1))  # 30 days


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def sub(**kw):
    base = {
        "external_id": "s1",
        "external_customer_id": "c1",
        "plan_code": "p",
        "subscription_at": utc(2024, 1, 1),
        "started_at": utc(2024, 1, 1),
    }
    return Subscription(**{**base, **kw})


def test_full_period_is_ratio_one():
    assert active_dates(APRIL, sub(), UTCZ) == (date(2024, 4, 1), date(2024, 4, 30))
    assert base_fee_days(APRIL, sub(), 0, UTCZ) == 30
    assert day_ratio(30, APRIL) == 1


def test_start_mid_period_bills_the_start_day_in_full():
    late = sub(subscription_at=utc(2024, 4, 16, 18), started_at=utc(2024, 4, 16, 18))
    assert base_fee_days(APRIL, late, 0, UTCZ) == 15
    assert day_ratio(15, APRIL) == D("0.5")


def test_start_day_is_local():
    # 2024-04-15 23:00 UTC is Apr 16 in Berlin
    berlin = ZoneInfo("Europe/Berlin")
    period = period_for_date(BillingSchedule("monthly", "calendar", date(2024, 1, 1), berlin), date(2024, 4, 1))
    late = sub(subscription_at=utc(2024, 4, 15, 23), started_at=utc(2024, 4, 15, 23))
    assert active_dates(period, late, berlin)[0] == date(2024, 4, 16)
    assert active_dates(APRIL, late, UTCZ)[0] == date(2024, 4, 15)


def test_termination_bills_the_termination_day():
    gone = sub(status="terminated", terminated_at=utc(2024, 4, 10, 15))
    assert base_fee_days(APRIL, gone, 0, UTCZ) == 10
    at_midnight = sub(status="terminated", terminated_at=utc(2024, 4, 11))
    assert base_fee_days(APRIL, at_midnight, 0, UTCZ) == 10


def test_upgrade_gives_the_switch_day_to_the_new_plan():
    old = sub(status="terminated", terminated_at=utc(2024, 4, 10, 15), next_plan_code="bigger")
    new = sub(plan_code="bigger", started_at=utc(2024, 4, 10, 15), previous_plan_code="p")
    assert base_fee_days(APRIL, old, 0, UTCZ) == 9
    assert base_fee_days(APRIL, new, 0, UTCZ) == 21
    assert base_fee_days(APRIL, old, 0, UTCZ) + base_fee_days(APRIL, new, 0, UTCZ) == APRIL.days


def test_not_active_in_period():
    assert active_dates(APRIL, sub(subscription_at=utc(2024, 5, 1), started_at=utc(2024, 5, 1)), UTCZ) is None
    assert base_fee_days(APRIL, sub(status="terminated", terminated_at=utc(2024, 4, 1)), 0, UTCZ) == 0


def test_trial_days_are_free():
    trial = sub(subscription_at=utc(2024, 4, 1, 9), started_at=utc(2024, 4, 1, 9))
    assert base_fee_days(APRIL, trial, 14, UTCZ) == 16  # Apr 1-14 free, Apr 15-30 billed
    assert base_fee_days(APRIL, trial, 45, UTCZ) == 0
    may = period_for_date(BillingSchedule("monthly", "calendar", date(2024, 1, 1), UTCZ), date(2024, 5, 1))
    assert base_fee_days(may, trial, 45, UTCZ) == 16  # trial ends May 15
    assert base_fee_days(may, trial, 14, UTCZ) == 31


def seat(value, op, *when):
    return SeatEvent(value, op, utc(*when))


def test_seat_added_on_day_16_costs_15_of_30():
    result = prorate_seats([seat("u1", "add", 2024, 4, 16, 10)], APRIL, UTCZ)
    assert result.seat_days == 15
    assert result.prorated_units == D("0.5")
    assert result.full_units == 1


def test_seats_carried_over_removed_and_readded():
    events = [
        seat("u1", "add", 2024, 3, 2),  # before the period: active from Apr 1
        seat("u2", "add", 2024, 4, 5),
        seat("u2", "remove", 2024, 4, 5, 18),  # same day: 1 day
        seat("u2", "add", 2024, 4, 5, 19),  # re-added the same day: still that one day
        seat("u2", "remove", 2024, 4, 6),
        seat("u3", "add", 2024, 4, 30, 23),
        seat("u4", "add", 2024, 3, 1),
        seat("u4", "remove", 2024, 3, 31),  # gone before the period
        seat("u5", "add", 2024, 5, 1),  # after the period
    ]
    result = prorate_seats(reversed(events), APRIL, UTCZ)  # order of input does not matter
    assert {s.value: s.active_days for s in result.seats} == {"u1": 30, "u2": 2, "u3": 1}
    assert result.seat_days == 33
    assert result.full_units == 3


def test_duplicate_adds_and_stray_removes_are_harmless():
    events = [seat("u1", "add", 2024, 4, 1), seat("u1", "add", 2024, 4, 20), seat("u9", "remove", 2024, 4, 2)]
    assert prorate_seats(events, APRIL, UTCZ).seat_days == 30


def test_seat_days_are_clipped_to_the_subscription_window():
    events = [("u1", "add", utc(2024, 3, 1))]
    result = prorate_seats(events, APRIL, UTCZ, window=(date(2024, 4, 11), date(2024, 4, 30)))
    assert result.seat_days == 20


def test_seat_days_follow_the_customer_timezone():
    # added at 2024-04-15 22:30 UTC = Apr 16 00:30 in Berlin (CEST)
    berlin = ZoneInfo("Europe/Berlin")
    period = period_for_date(BillingSchedule("monthly", "calendar", date(2024, 1, 1), berlin), date(2024, 4, 1))
    assert prorate_seats([seat("u1", "add", 2024, 4, 15, 22, 30)], period, berlin).seat_days == 15


@given(
    st.integers(min_value=2000, max_value=2040),
    st.integers(min_value=1, max_value=12),
    st.sampled_from(["UTC", "America/New_York", "Europe/Berlin", "Pacific/Kiritimati", "Etc/GMT+12"]),
    st.integers(min_value=1, max_value=40),
)
def test_a_seat_over_a_full_period_costs_its_full_price(year, month, tz, seats):
    zone = ZoneInfo(tz)
    period = period_for_date(BillingSchedule("monthly", "calendar", date(2000, 1, 1), zone), date(year, month, 1))
    events = [SeatEvent(f"u{i}", "add", period.start_utc - timedelta(days=i)) for i in range(seats)]
    result = prorate_seats(events, period, zone)
    assert result.prorated_units == seats
    assert result.full_units == seats


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans(), st.integers(-100, 800)), max_size=40))
def test_seat_days_stay_within_the_period(raw):
    events = [SeatEvent(f"u{v}", "add" if add else "remove", APRIL.start_utc + timedelta(hours=h)) for v, add, h in raw]
    result = prorate_seats(events, APRIL, UTCZ)
    assert all(0 < s.active_days <= APRIL.days for s in result.seats)
    assert 0 <= result.prorated_units <= result.full_units


def reference_seat_days(events, period, zone, window):
    """Slow but obvious: the set of billed local dates of each value."""
    first, last = window
    active: dict[str, date] = {}
    dates: dict[str, set[date]] = {}
    for value, op, ts in sorted(events, key=lambda e: e[2]):
        if ts >= period.end_utc:
            break
        day = ts.astimezone(zone).date()
        if op == "add" and value not in active:
            active[value] = day
        elif op == "remove" and value in active:
            since = active.pop(value)
            dates.setdefault(value, set()).update(since + timedelta(days=i) for i in range((day - since).days + 1))
    for value, since in active.items():
        dates.setdefault(value, set()).update(since + timedelta(days=i) for i in range((last - since).days + 1))
    result = {value: sum(1 for d in ds if first <= d <= last) for value, ds in dates.items()}
    return {value: n for value, n in result.items() if n}


@given(
    st.lists(st.tuples(st.integers(0, 4), st.booleans(), st.integers(-24 * 40, 24 * 40)), max_size=30),
    st.sampled_from(["UTC", "America/New_York", "Pacific/Kiritimati", "Etc/GMT+12"]),
    st.integers(0, 29),
    st.integers(0, 29),
)
def test_seat_days_match_a_day_by_day_reference(raw, tz, a, b):
    zone = ZoneInfo(tz)
    period = period_for_date(BillingSchedule("monthly", "calendar", date(2000, 1, 1), zone), date(2024, 4, 1))
    window = (period.start_date + timedelta(days=min(a, b)), period.start_date + timedelta(days=max(a, b)))
    events = [(f"u{v}", "add" if add else "remove", period.start_utc + timedelta(hours=h)) for v, add, h in raw]
    result = prorate_seats(events, period, zone, window)
    assert {s.value: s.active_days for s in result.seats} == reference_seat_days(events, period, zone, window)
    prorated, full = seat_units(events, period, zone, window)
    assert full == len(result.seats)
    assert prorated == result.prorated_units
