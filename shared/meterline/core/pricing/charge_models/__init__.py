"""The charge models, registered in one table keyed by Lago's `charge_model` name.

Each model is one module here holding both its configuration (its `...Properties` model, what
a plan's charge carries in Lago's `properties`) and its pricing. Adding a model means that
module, one line in CHARGE_MODELS and in ChargeProperties below, and its name in
`meterline.core.catalog.ChargeModelName` (a test holds the names equal); nothing else
dispatches on the name.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from meterline.core.pricing.charge_models.base import ChargeModel
from meterline.core.pricing.charge_models.graduated import GraduatedModel, GraduatedProperties, GraduatedRange
from meterline.core.pricing.charge_models.graduated_percentage import (
    GraduatedPercentageModel,
    GraduatedPercentageProperties,
    GraduatedPercentageRange,
)
from meterline.core.pricing.charge_models.package import PackageModel, PackageProperties
from meterline.core.pricing.charge_models.percentage import PercentageModel, PercentageProperties
from meterline.core.pricing.charge_models.standard import StandardModel, StandardProperties
from meterline.core.pricing.charge_models.volume import VolumeModel, VolumeProperties, VolumeRange
from meterline.core.pricing.fee import ChargeResult
from meterline.core.pricing.usage import ChargeUsage

__all__ = [
    "CHARGE_MODELS",
    "ChargeModel",
    "ChargeProperties",
    "GraduatedPercentageProperties",
    "GraduatedPercentageRange",
    "GraduatedProperties",
    "GraduatedRange",
    "PackageProperties",
    "PercentageProperties",
    "StandardProperties",
    "VolumeProperties",
    "VolumeRange",
    "price",
]

# By each model's own name; the names are catalog.ChargeModelName (a test holds them equal).
CHARGE_MODELS: dict[str, ChargeModel] = {
    model.name: model
    for model in (StandardModel(), GraduatedModel(), VolumeModel(), PackageModel(), PercentageModel(), GraduatedPercentageModel())
}


# A charge's `properties`: the model named by its charge_model (which the catalog's Charge
# copies in, since Lago nests them the other way).
ChargeProperties = Annotated[
    StandardProperties
    | GraduatedProperties
    | VolumeProperties
    | PackageProperties
    | PercentageProperties
    | GraduatedPercentageProperties,
    Field(discriminator="charge_model"),
]


def price(properties: Any, usage: ChargeUsage) -> ChargeResult:
    """Price usage with a charge's properties (its charge_model picks the model)."""
    return CHARGE_MODELS[properties.charge_model].apply(properties, usage)
