"""Time as exact epoch microseconds: the one representation every layer stores and compares,
and the one home of the text forms a time is written in.

Floats of seconds lose microseconds past 2**53 µs (about 285 years, but also at any sum or
difference), so times are ints of microseconds; these are the only conversions.

The text forms, all UTC with a Z:
- `iso_ms`: Lago's timestamps, to the millisecond (`2024-01-31T09:30:00.250Z`): events,
  catalog stamps, log lines;
- `iso_seconds`: Lago's billing-period bounds, to the second (`2024-01-31T23:59:59Z`);
- `iso_exact`: Python's own form (the fraction only when there is one), how invoices have
  always answered their times;
- `iso_us`: all six digits, how warehouse rows carry time.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(value: Any) -> int:
    """A datetime (timezone-aware; naive means UTC, as warehouses return it) or ISO-8601 text
    -> exact epoch microseconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@functools.lru_cache(maxsize=4096)  # rows repeat a few instants (a period's bounds, a run's time) many times
def iso_us(us: int) -> str:
    """Epoch microseconds -> ISO-8601 UTC text with all six digits (how rows carry time)."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{us % 1_000_000:06d}Z"


_EPOCH_DAY = date(1970, 1, 1)


@functools.lru_cache(maxsize=1024)
def _iso_day(days: int) -> str:
    return (_EPOCH_DAY + timedelta(days=days)).isoformat()


# Text pieces of a time of day, built once (about 150 kB): looking them up is 3-4x cheaper
# than formatting numbers, and iso_ms runs for every event answered.
_HH_MM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SS = [f"{s:02d}" for s in range(60)]
_MMM = [f"{ms:03d}" for ms in range(1000)]


def iso_ms(value: int | datetime) -> str:
    """Epoch microseconds or an aware datetime -> ISO-8601 UTC with milliseconds (truncated),
    as Lago prints timestamps: `2024-01-31T09:30:00.250Z`.

    Runs twice per event on the hot path, so for microseconds the date is cached per day and
    the time of day is looked up in tables: several times cheaper than formatting a datetime,
    with the same text.
    """
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"
    seconds, micros = divmod(value, 1_000_000)
    days, second_of_day = divmod(seconds, 86_400)
    minute, second = divmod(second_of_day, 60)
    return f"{_iso_day(days)}T{_HH_MM[minute]}{_SS[second]}.{_MMM[micros // 1000]}Z"


def iso_seconds(value: datetime) -> str:
    """An aware datetime -> ISO-8601 UTC to the second, as Lago prints a billing period's
    bounds: `2024-01-31T23:59:59Z` (a fraction, if any, is dropped)."""
    return f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def iso_exact(value: datetime | None) -> str | None:
    """A datetime as Python's isoformat writes it, UTC as Z: whole seconds, or all six digits
    when there is a fraction (`2024-01-31T09:30:00Z`, `2024-01-31T09:30:00.250000Z`). None (a
    time not set) stays None: Lago answers null."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")
