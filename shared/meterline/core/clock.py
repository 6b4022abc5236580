"""Time as exact epoch microseconds: the one representation every layer stores and compares.

Floats of seconds lose microseconds past 2**53 µs (about 285 years, but also at any sum or
difference), so times are ints of microseconds; these are the only conversions.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def now_us() -> int:
    return time.time_ns() // 1000


def to_us(value: Any) -> int:
    """A datetime (timezone-aware; naive means UTC, as warehouses return it) or ISO-8601 text
    -> exact epoch microseconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@functools.lru_cache(maxsize=4096)  # rows repeat a few instants (a period's bounds, a run's time) many times
def iso_us(us: int) -> str:
    """Epoch microseconds -> ISO-8601 UTC text with all six digits (how rows carry time)."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{us % 1_000_000:06d}Z"
