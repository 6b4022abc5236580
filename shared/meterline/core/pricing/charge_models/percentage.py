"""Percentage: rate % of the transaction amounts plus a fixed fee per transaction.

Units are the summed transaction amounts. Options, all Lago's:
- free_units_per_events: the first N transactions are free (no percentage, no fixed fee);
- free_units_per_total_aggregation: the first X of amount is free;
  with both, the allowance ends when either runs out ("the first 3 events or $500");
- per_transaction_min_amount / per_transaction_max_amount: each paid transaction's fee
  (percentage + fixed) is raised to the minimum or capped at the maximum.
These need each event's value, in time order (`ChargeUsage.event_values`). Without them only
the simple form (rate and fixed_amount) can be priced, from units and events_count.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from meterline.core.fields import Amount, Integer
from meterline.core.pricing.charge_models.base import HUNDRED, ZERO, ChargeModel, Properties
from meterline.core.pricing.fee import ChargeResult, TierDetail
from meterline.core.pricing.usage import ChargeUsage


class PercentageProperties(Properties):
    """rate % of each event's amount plus fixed_amount per event, after free events/amount."""

    charge_model: Literal["percentage"] = Field("percentage", exclude=True)
    rate: Amount
    fixed_amount: Amount | None = None
    free_units_per_events: Annotated[Integer, Field(ge=0)] | None = None
    free_units_per_total_aggregation: Amount | None = None
    per_transaction_min_amount: Amount | None = None
    per_transaction_max_amount: Amount | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> PercentageProperties:
        low, high = self.per_transaction_min_amount, self.per_transaction_max_amount
        if low is not None and high is not None and low > high:
            raise PydanticCustomError("invalid_value", "per_transaction_min_amount exceeds per_transaction_max_amount")
        return self

    def prices(self) -> tuple[Decimal, ...]:
        return tuple(p for p in (self.fixed_amount, self.per_transaction_min_amount) if p is not None)

    @property
    def needs_event_values(self) -> bool:
        """Free allowances and per-transaction bounds depend on each event's amount."""
        return bool(
            self.free_units_per_events
            or self.free_units_per_total_aggregation
            or self.per_transaction_min_amount is not None
            or self.per_transaction_max_amount is not None
        )


class PercentageModel(ChargeModel):
    name = "percentage"

    def compute(self, properties: PercentageProperties, usage: ChargeUsage) -> ChargeResult:
        if usage.event_values is not None:
            return self._per_event(properties, usage.event_values)
        if properties.needs_event_values:
            raise ValueError("this percentage charge has free units or per-transaction min/max: pass event_values")
        return self._aggregate(properties, usage)

    def _aggregate(self, properties: PercentageProperties, usage: ChargeUsage) -> ChargeResult:
        units = usage.units
        fixed = properties.fixed_amount or ZERO
        events = usage.events_count
        if fixed and events is None:
            raise ValueError("a percentage charge with fixed_amount needs events_count")
        if units == 0:
            # NOTE: Lago charges no fixed fee when the summed amount is zero.
            events = 0
        return self._result(properties, units, ZERO, units, events or 0, ZERO, allowance=False)

    def _per_event(self, properties: PercentageProperties, values: tuple[Decimal, ...]) -> ChargeResult:
        rate = properties.rate / HUNDRED
        fixed = properties.fixed_amount or ZERO
        low, high = properties.per_transaction_min_amount, properties.per_transaction_max_amount
        free_events = properties.free_units_per_events or None
        free_amount = properties.free_units_per_total_aggregation or None
        allowance = free_events is not None or free_amount is not None

        clamped = [v if v > 0 else ZERO for v in values]  # a refund never pays the customer
        units = sum(clamped, ZERO)
        free_units = paid_units = adjustment = ZERO
        paid_events = 0
        if units == 0:
            clamped = []  # NOTE: as Lago, nothing (not even a minimum) when nothing was transacted
        for value in clamped:
            free_part = ZERO
            if allowance:
                # An event is wholly free while both allowances last; the event that exhausts
                # the amount allowance is free only up to what was left, and pays the fixed
                # fee (Lago counts it as a paid event: its running total is not below the cap).
                if free_amount is None or value < free_amount:
                    free_units += value
                    if free_amount is not None:
                        free_amount -= value
                    if free_events is not None:
                        free_events -= 1
                        allowance = free_events > 0
                    continue
                free_part = free_amount
                free_amount = ZERO
                allowance = False
            rated = value - free_part
            free_units += free_part
            fee = rated * rate + fixed
            if low is not None and fee < low:
                adjustment += low - fee
            elif high is not None and fee > high:
                adjustment += high - fee
            paid_units += rated
            paid_events += 1
        has_allowance = (
            properties.free_units_per_events is not None or properties.free_units_per_total_aggregation is not None
        )
        return self._result(properties, units, free_units, paid_units, paid_events, adjustment, allowance=has_allowance)

    @staticmethod
    def _result(
        properties: PercentageProperties,
        units: Decimal,
        free_units: Decimal,
        paid_units: Decimal,
        paid_events: int,
        adjustment: Decimal,
        *,
        allowance: bool,
    ) -> ChargeResult:
        rate = properties.rate
        fixed = properties.fixed_amount or ZERO
        percentage_amount = paid_units * rate / HUNDRED
        fixed_amount = paid_events * fixed
        details = []
        if allowance:
            details.append(TierDetail(ZERO, None, free_units, ZERO, ZERO, ZERO, kind="free"))
        details.append(
            TierDetail(ZERO, None, paid_units, rate / HUNDRED, ZERO, percentage_amount, kind="percentage", rate=rate)
        )
        if properties.fixed_amount is not None:
            details.append(TierDetail(ZERO, None, Decimal(paid_events), fixed, ZERO, fixed_amount, kind="fixed_fees"))
        if properties.per_transaction_min_amount is not None or properties.per_transaction_max_amount is not None:
            details.append(TierDetail(ZERO, None, ZERO, ZERO, adjustment, adjustment, kind="adjustment"))
        return ChargeResult(units, percentage_amount + fixed_amount + adjustment, tuple(details))
