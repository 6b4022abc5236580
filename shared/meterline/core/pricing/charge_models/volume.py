"""Volume: all units at the price of the tier the total reaches, plus that tier's flat fee.

100 units in 0-100 at 2 + 10 flat cost 210; 101 units in 101-200 at 1 cost 101 (cheaper:
that is the point of volume pricing). At 0 units the first tier's flat fee applies (Lago).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, field_validator

from meterline.core.pricing.charge_models.base import ChargeModel, Properties, check_ranges
from meterline.core.pricing.charge_models.graduated import GraduatedRange
from meterline.core.pricing.fee import ChargeResult, new_charge_result, new_tier_detail
from meterline.core.pricing.usage import ChargeUsage


class VolumeRange(GraduatedRange):
    """A volume tier: the same fields as a graduated one, priced differently."""


class VolumeProperties(Properties):
    charge_model: Literal["volume"] = Field("volume", exclude=True)
    volume_ranges: tuple[VolumeRange, ...]

    @field_validator("volume_ranges")
    @classmethod
    def _ranges(cls, value: tuple[VolumeRange, ...]) -> tuple[VolumeRange, ...]:
        return check_ranges(value, "volume_ranges")

    def prices(self) -> tuple[Decimal, ...]:
        return tuple(p for r in self.volume_ranges for p in (r.per_unit_amount, r.flat_amount))


class VolumeModel(ChargeModel):
    name = "volume"

    def compute(self, properties: VolumeProperties, usage: ChargeUsage) -> ChargeResult:
        # NOTE: a prorated charge prices its prorated units at the tier its full (unprorated)
        # quantity reaches: 300 seats for half a month are 150 seat-units at the 201+ price.
        selector = usage.full_units if usage.full_units is not None else usage.units
        ranges = properties.volume_ranges
        tier = ranges[-1]
        for rng in ranges:
            # A tier covers (previous to_value, to_value], so 100.5 falls in 101-200 as in Lago.
            if rng.to_value is None or selector <= rng.to_value:
                tier = rng
                break
        amount = usage.units * tier.per_unit_amount + tier.flat_amount
        detail = new_tier_detail(
            (tier.from_value, tier.to_value, usage.units, tier.per_unit_amount, tier.flat_amount, amount, "tier", None)
        )
        return new_charge_result((usage.units, amount, (detail,)))
