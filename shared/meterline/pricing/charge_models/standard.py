"""Standard: every unit at the same price (units x amount)."""

from __future__ import annotations

from meterline.catalog import StandardProperties
from meterline.pricing.charge_models.base import ZERO, ChargeModel
from meterline.pricing.fee import ChargeResult, TierDetail
from meterline.pricing.usage import ChargeUsage


class StandardModel(ChargeModel):
    name = "standard"

    def _compute(self, properties: StandardProperties, usage: ChargeUsage) -> ChargeResult:
        amount = usage.units * properties.amount
        detail = TierDetail(ZERO, None, usage.units, properties.amount, ZERO, amount)
        return ChargeResult(usage.units, amount, (detail,))
