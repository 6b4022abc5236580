"""Graduated percentage: a rate per tier of the aggregated amount, plus each entered tier's flat fee.

Unlike graduated, nothing is charged at zero units, not even the first tier's flat fee
(Lago: "does not apply the flat amount" when aggregation is 0): there is no transaction
volume to take a percentage of.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from meterline.core.fields import Amount, Bound
from meterline.core.lago_model import LagoModel
from meterline.core.pricing.charge_models.base import HUNDRED, ChargeModel, Properties, check_ranges, walk_tiers
from meterline.core.pricing.fee import ChargeResult, new_charge_result
from meterline.core.pricing.usage import ChargeUsage


class GraduatedPercentageRange(LagoModel):
    from_value: Bound
    to_value: Bound | None
    rate: Amount  # a percentage: "1.5" means 1.5 %
    flat_amount: Amount


class GraduatedPercentageProperties(Properties):
    charge_model: Literal["graduated_percentage"] = Field("graduated_percentage", exclude=True)
    graduated_percentage_ranges: tuple[GraduatedPercentageRange, ...]

    @field_validator("graduated_percentage_ranges")
    @classmethod
    def _ranges(cls, value: tuple[GraduatedPercentageRange, ...]) -> tuple[GraduatedPercentageRange, ...]:
        return check_ranges(value, "graduated_percentage_ranges")

    def prices(self) -> tuple[Decimal, ...]:
        return tuple(r.flat_amount for r in self.graduated_percentage_ranges)


def _per_unit(rng):
    return rng.rate / HUNDRED  # exact: dividing by 100 only shifts the exponent


def _rate(rng):
    return rng.rate


class GraduatedPercentageModel(ChargeModel):
    name = "graduated_percentage"

    def compute(self, properties: GraduatedPercentageProperties, usage: ChargeUsage) -> ChargeResult:
        total, details = walk_tiers(
            properties.graduated_percentage_ranges, usage.units, _per_unit, first_flat_at_zero=False, rate_of=_rate
        )
        return new_charge_result((usage.units, total, details))
