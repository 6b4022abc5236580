"""Package: units are sold in packages; a started package is a whole package.

ceil((units - free_units) / package_size) * amount. Lago's docs: $5 per 100 units with 100
free units, 201 units cost 0 + 5 + 5 = $10.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Annotated, Literal

from pydantic import Field

from meterline.core.fields import Amount, Integer
from meterline.core.pricing.charge_models.base import ZERO, ChargeModel, Properties
from meterline.core.pricing.fee import ChargeResult, TierDetail
from meterline.core.pricing.usage import ChargeUsage


class PackageProperties(Properties):
    charge_model: Literal["package"] = Field("package", exclude=True)
    amount: Amount
    free_units: Annotated[Integer, Field(ge=0)] = 0
    package_size: Annotated[Integer, Field(ge=1)]

    def prices(self) -> tuple[Decimal, ...]:
        return (self.amount,)


class PackageModel(ChargeModel):
    name = "package"

    def compute(self, properties: PackageProperties, usage: ChargeUsage) -> ChargeResult:
        free_units = Decimal(properties.free_units)
        paid_units = usage.units - free_units
        if paid_units < 0:
            paid_units = ZERO
        packages = (paid_units / properties.package_size).to_integral_value(rounding=ROUND_CEILING)
        amount = packages * properties.amount
        details = (
            TierDetail(ZERO, free_units, usage.units - paid_units, ZERO, ZERO, ZERO, kind="free"),
            # units here are packages, so amount == units * per_unit_amount still holds
            TierDetail(free_units, None, packages, properties.amount, ZERO, amount, kind="packages"),
        )
        return ChargeResult(usage.units, amount, details)
