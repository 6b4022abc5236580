"""Graduated: each tier's units at that tier's price, plus each entered tier's flat fee.

Lago's example (0-10 at 10 + 2 flat, 11-20 at 5 + 3, 21+ at 5 + 3): 11 units cost
10*10 + 2 + 1*5 + 3 = 110; 21 units cost 163; 0 units cost 2.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from meterline.core.fields import Amount, Bound
from meterline.core.lago_model import LagoModel
from meterline.core.pricing.charge_models.base import ChargeModel, Properties, check_ranges, walk_tiers
from meterline.core.pricing.fee import ChargeResult, new_charge_result
from meterline.core.pricing.usage import ChargeUsage


class GraduatedRange(LagoModel):
    from_value: Bound
    to_value: Bound | None
    per_unit_amount: Amount
    flat_amount: Amount


class GraduatedProperties(Properties):
    charge_model: Literal["graduated"] = Field("graduated", exclude=True)
    graduated_ranges: tuple[GraduatedRange, ...]

    @field_validator("graduated_ranges")
    @classmethod
    def _ranges(cls, value: tuple[GraduatedRange, ...]) -> tuple[GraduatedRange, ...]:
        return check_ranges(value, "graduated_ranges")

    def prices(self) -> tuple[Decimal, ...]:
        return tuple(p for r in self.graduated_ranges for p in (r.per_unit_amount, r.flat_amount))


def _per_unit(rng):
    return rng.per_unit_amount


class GraduatedModel(ChargeModel):
    name = "graduated"

    def compute(self, properties: GraduatedProperties, usage: ChargeUsage) -> ChargeResult:
        # NOTE: the first range's flat fee is charged even at zero usage (Lago: "applies the
        # flat amount from the first tier" when aggregation is 0): it is an access fee.
        total, details = walk_tiers(properties.graduated_ranges, usage.units, _per_unit, first_flat_at_zero=True)
        return new_charge_result((usage.units, total, details))
