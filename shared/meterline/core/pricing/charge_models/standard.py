"""Standard: every unit at the same price (units x amount)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from meterline.core.fields import Amount
from meterline.core.pricing.charge_models.base import ZERO, ChargeModel, Properties
from meterline.core.pricing.fee import ChargeResult, new_charge_result, new_tier_detail
from meterline.core.pricing.usage import ChargeUsage


class StandardProperties(Properties):
    charge_model: Literal["standard"] = Field("standard", exclude=True)
    amount: Amount

    def prices(self) -> tuple[Decimal, ...]:
        return (self.amount,)


class StandardModel(ChargeModel):
    name = "standard"

    def compute(self, properties: StandardProperties, usage: ChargeUsage) -> ChargeResult:
        amount = usage.units * properties.amount
        detail = new_tier_detail((ZERO, None, usage.units, properties.amount, ZERO, amount, "tier", None))
        return new_charge_result((usage.units, amount, (detail,)))
