"""Graduated percentage: a rate per tier of the aggregated amount, plus each entered tier's flat fee.

Unlike graduated, nothing is charged at zero units, not even the first tier's flat fee
(Lago: "does not apply the flat amount" when aggregation is 0): there is no transaction
volume to take a percentage of.
"""

from __future__ import annotations

from meterline.core.catalog import GraduatedPercentageProperties
from meterline.core.pricing.charge_models.base import HUNDRED, ChargeModel, walk_tiers
from meterline.core.pricing.fee import ChargeResult, new_charge_result
from meterline.core.pricing.usage import ChargeUsage


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
