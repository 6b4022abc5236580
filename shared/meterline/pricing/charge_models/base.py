"""What every charge model shares: clamping, the money context and the tier walk.

A charge model is a small class with one method, `_compute(properties, usage)`, returning the
precise amount with its details. `apply` wraps it so every model clamps negative units to 0
(Lago does the same: refunds or decrements never make a charge pay the customer) and computes
in the 50-digit money context. No model rounds: `pricing.fee.make_fee` does, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from meterline.money import money_context
from meterline.pricing.fee import ChargeResult, TierDetail
from meterline.pricing.usage import ChargeUsage

__all__ = ["ChargeModel", "walk_tiers"]

ZERO = Decimal(0)
HUNDRED = Decimal(100)


class ChargeModel(ABC):
    """Base of the charge models; subclasses set `name` and implement `_compute`."""

    name: ClassVar[str]

    def apply(self, properties: Any, usage: ChargeUsage) -> ChargeResult:
        """Price `usage` with this model's `properties` (the catalog's properties model)."""
        if usage.units < 0:
            usage = replace(usage, units=ZERO)
        with money_context():
            return self._compute(properties, usage)

    @abstractmethod
    def _compute(self, properties: Any, usage: ChargeUsage) -> ChargeResult: ...


class _Range(Protocol):
    from_value: Decimal
    to_value: Decimal | None
    flat_amount: Decimal


def walk_tiers(
    ranges: tuple[_Range, ...],
    units: Decimal,
    unit_price: Any,
    *,
    first_flat_at_zero: bool,
    rate_of: Any = None,
) -> tuple[Decimal, tuple[TierDetail, ...]]:
    """Fill tiers bottom-up (graduated and graduated_percentage).

    A tier holds the units above the previous tier's to_value up to its own to_value, so
    Lago's integer tiers (0-10, 11-20: 10 units each) and adjacent decimal tiers (0-0.1,
    0.1-1) are treated alike, and 10.5 units put 0.5 in the 11-20 tier, as Lago does.
    A tier's flat_amount is charged once the tier is entered (it holds units > 0).
    `unit_price(range)` gives the per-unit amount; `rate_of(range)` the rate, if any.
    """
    total = ZERO
    details: list[TierDetail] = []
    lower = ZERO
    for index, rng in enumerate(ranges):
        upper = rng.to_value
        top = units if upper is None or units < upper else upper
        in_tier = top - lower if top > lower else ZERO
        per_unit = unit_price(rng)
        if in_tier > 0 or (index == 0 and first_flat_at_zero):
            flat = rng.flat_amount
        else:
            flat = ZERO
        amount = in_tier * per_unit + flat
        total += amount
        details.append(
            TierDetail(
                from_value=rng.from_value,
                to_value=upper,
                units=in_tier,
                per_unit_amount=per_unit,
                flat_amount=flat,
                amount=amount,
                rate=rate_of(rng) if rate_of else None,
            )
        )
        if upper is None or units <= upper:
            break
        lower = upper
    return total, tuple(details)
