"""The charge models, registered in one table keyed by Lago's `charge_model` name.

Adding a model means one module here, one properties model in `meterline.core.catalog`, and one
line in CHARGE_MODELS; nothing else dispatches on the name.
"""

from __future__ import annotations

from typing import Any

from meterline.core.pricing.charge_models.base import ChargeModel
from meterline.core.pricing.charge_models.graduated import GraduatedModel
from meterline.core.pricing.charge_models.graduated_percentage import GraduatedPercentageModel
from meterline.core.pricing.charge_models.package import PackageModel
from meterline.core.pricing.charge_models.percentage import PercentageModel
from meterline.core.pricing.charge_models.standard import StandardModel
from meterline.core.pricing.charge_models.volume import VolumeModel
from meterline.core.pricing.fee import ChargeResult
from meterline.core.pricing.usage import ChargeUsage

__all__ = ["CHARGE_MODELS", "ChargeModel", "price"]

# By each model's own name; the names are catalog.ChargeModelName (a test holds them equal).
CHARGE_MODELS: dict[str, ChargeModel] = {
    model.name: model
    for model in (StandardModel(), GraduatedModel(), VolumeModel(), PackageModel(), PercentageModel(), GraduatedPercentageModel())
}


def price(properties: Any, usage: ChargeUsage) -> ChargeResult:
    """Price usage with a catalog properties model (its charge_model picks the model)."""
    return CHARGE_MODELS[properties.charge_model].apply(properties, usage)
