"""The usage a charge is priced on: plain data, produced by the aggregation layer (SQL).

Kept separate from the catalog because it is per subscription and per period, and from the
charge models because rating turns raw seat events into prorated units before pricing.
Both types are immutable NamedTuples: cheap to build by the thousand in a billing run.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Literal, NamedTuple

__all__ = ["ChargeUsage", "SeatEvent", "UsageKey", "new_charge_usage"]

# (charge reference, filter key or None for the charge's own/unfiltered bucket)
UsageKey = tuple[str, str | None]


class SeatEvent(NamedTuple):
    """One add/remove of a unique value of a recurring unique_count metric (a seat).

    A NamedTuple, so a plain (value, operation_type, timestamp) tuple from a SQL row works
    wherever a SeatEvent does, with no conversion.
    """

    value: str
    operation_type: Literal["add", "remove"]
    timestamp: datetime  # timezone-aware


class ChargeUsage(NamedTuple):
    """Usage of one charge (or one filter of a charge) in one period.

    units:        the aggregated quantity (count, sum, max, unique count, ...). Negative
                  values are clamped to 0 by the charge models.
    events_count: number of events; needed by percentage charges with a fixed_amount.
    event_values: each event's value in time order; needed by percentage charges with free
                  units or per-transaction min/max. When given, units and events_count are
                  derived from it.
    full_units:   units before proration, which select the tier of a prorated volume charge
                  (rating fills it in from seat events).
    seat_events:  add/remove events of a recurring unique_count metric, including the ones
                  before the period (they decide which seats are active at its start). A
                  prorated charge bills each seat for its active days; otherwise every seat
                  active at some point in the period counts as one unit.
    """

    units: Decimal = Decimal(0)
    events_count: int | None = None
    event_values: tuple[Decimal, ...] | None = None
    full_units: Decimal | None = None
    seat_events: tuple[SeatEvent, ...] | None = None


# See pricing.fee.new_tier_detail: the same object as ChargeUsage(...), built faster.
new_charge_usage = partial(tuple.__new__, ChargeUsage)
