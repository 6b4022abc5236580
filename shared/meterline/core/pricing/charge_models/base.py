"""What every charge model shares: the properties base and range rules, clamping, the money
context and the tier walk.

Each model's module holds its configuration (a `Properties` model: what a plan's charge says
in Lago's `properties`) and its pricing. A charge model is a small class with one method,
`compute(properties, usage)`, returning the
precise amount with its details. `apply` wraps it so every model clamps negative units to 0
(Lago does the same: refunds or decrements never make a charge pay the customer) and computes
in the 50-digit money context. No model rounds: `pricing.fee.make_fee` does, once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, getcontext
from typing import Any, ClassVar, Protocol

from pydantic import Field
from pydantic_core import PydanticCustomError

from meterline.core.lago_model import LagoModel
from meterline.core.money import MONEY_CONTEXT, money_context
from meterline.core.pricing.fee import ChargeResult, TierDetail, new_tier_detail
from meterline.core.pricing.memo import ByIdentity
from meterline.core.pricing.usage import ChargeUsage

__all__ = ["ChargeModel", "Properties", "check_ranges", "clamped", "walk_tiers"]

ZERO = Decimal(0)
HUNDRED = Decimal(100)


class Properties(LagoModel):
    """A charge model's configuration: Lago's `properties` object of a charge."""

    # Injected from Charge.charge_model so pydantic can pick the right model; never dumped,
    # because Lago's `properties` object does not carry it.
    charge_model: str = Field(exclude=True)

    def prices(self) -> tuple[Decimal, ...]:
        """The money amounts it states that one unit (or package, or event) is charged on its
        own: a plan refuses one beyond the money domain, which no usage could ever bill
        (`meterline.core.catalog.Plan`). Rates and caps are not among them."""
        return ()


def check_ranges(ranges: tuple[Any, ...], code: str) -> tuple[Any, ...]:
    """Lago's range rules: the first from_value is 0, each range starts at the previous
    to_value (+1 for integer tiers, or equal for "adjacent" decimal tiers), every range is
    non-empty, and only the last to_value may be null."""
    if not ranges:
        raise PydanticCustomError(f"missing_{code}", "at least one range is required")
    previous_to: Decimal | None = None
    for index, rng in enumerate(ranges):
        last = index == len(ranges) - 1
        if index == 0:
            if rng.from_value != 0:
                raise PydanticCustomError(f"invalid_{code}", "the first range must start at 0")
        elif previous_to is None or rng.from_value not in (previous_to, previous_to + 1):
            # (previous_to is None only after an open-ended range, refused below on its turn)
            raise PydanticCustomError(f"invalid_{code}", "ranges must be contiguous")
        if rng.to_value is None:
            if not last:
                raise PydanticCustomError(f"invalid_{code}", "only the last range may be open-ended")
        else:
            lower = previous_to if previous_to is not None else Decimal(0)
            if rng.to_value < rng.from_value or rng.to_value <= lower:
                raise PydanticCustomError(f"invalid_{code}", "to_value must be above from_value")
            if last:
                raise PydanticCustomError(f"invalid_{code}", "the last range must be open-ended (to_value null)")
        previous_to = rng.to_value
    return ranges


class ChargeModel(ABC):
    """Base of the charge models; subclasses set `name` and implement `compute`."""

    name: ClassVar[str]

    def apply(self, properties: Any, usage: ChargeUsage) -> ChargeResult:
        """Price `usage` with this model's `properties` (its Properties model)."""
        usage = clamped(usage)
        context = getcontext()
        if context.prec >= MONEY_CONTEXT.prec and context.rounding == ROUND_HALF_UP:
            return self.compute(properties, usage)  # already in the money context
        with money_context():
            return self.compute(properties, usage)

    @abstractmethod
    def compute(self, properties: Any, usage: ChargeUsage) -> ChargeResult:
        """The model itself. Callers guarantee units >= 0 and an active money_context()
        (`apply` does both; rating does both once per subscription)."""


def clamped(usage: ChargeUsage) -> ChargeUsage:
    """Usage with negative units counted as zero: refunds or decrements never make a charge
    pay the customer (Lago does the same)."""
    return usage._replace(units=ZERO) if usage.units < 0 else usage


class _Range(Protocol):
    # Read-only: the ranges are frozen models.
    @property
    def from_value(self) -> Decimal: ...
    @property
    def to_value(self) -> Decimal | None: ...
    @property
    def flat_amount(self) -> Decimal: ...


# Compiled tiers per (frozen) ranges tuple. A ranges tuple belongs to one properties model, so
# it is always walked with the same unit_price and rate_of.
_TIERS: ByIdentity[tuple[tuple[Any, ...], ...]] = ByIdentity(4096)


def _compiled(
    ranges: tuple[_Range, ...], unit_price: Callable[[Any], Decimal], rate_of: Callable[[Any], Decimal] | None
) -> tuple[tuple[Any, ...], ...]:
    """(lower, upper, from_value, per_unit, flat, rate) per tier."""
    tiers = []
    lower: Decimal | None = ZERO  # None only after the last, open-ended range
    for rng in ranges:
        tiers.append(
            (lower, rng.to_value, rng.from_value, unit_price(rng), rng.flat_amount, rate_of(rng) if rate_of else None)
        )
        lower = rng.to_value
    return tuple(tiers)


def walk_tiers(
    ranges: tuple[_Range, ...],
    units: Decimal,
    unit_price: Callable[[Any], Decimal],
    *,
    first_flat_at_zero: bool,
    rate_of: Callable[[Any], Decimal] | None = None,
) -> tuple[Decimal, tuple[TierDetail, ...]]:
    """Fill tiers bottom-up (graduated and graduated_percentage).

    A tier holds the units above the previous tier's to_value up to its own to_value, so
    Lago's integer tiers (0-10, 11-20: 10 units each) and adjacent decimal tiers (0-0.1,
    0.1-1) are treated alike, and 10.5 units put 0.5 in the 11-20 tier, as Lago does.
    A tier's flat_amount is charged once the tier is entered (it holds units > 0).
    `unit_price(range)` gives the per-unit amount; `rate_of(range)` the rate, if any.
    """
    tiers = _TIERS.get(ranges, _compiled, unit_price, rate_of)
    total = ZERO
    details = []
    first = True
    for lower, upper, from_value, per_unit, flat, rate in tiers:
        if upper is None or units < upper:
            in_tier = units - lower if units > lower else ZERO
        else:
            in_tier = upper - lower
        if not in_tier and not (first and first_flat_at_zero):
            flat = ZERO
        amount = in_tier * per_unit + flat
        total += amount
        details.append(new_tier_detail((from_value, upper, in_tier, per_unit, flat, amount, "tier", rate)))
        if upper is None or units <= upper:
            break
        first = False
    return total, tuple(details)
