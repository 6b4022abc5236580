"""Billable metrics: what is measured, and how events aggregate into units."""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from meterline.core.catalog.base import Stamped, lago_id
from meterline.core.fields import Integer, Key, PropertyName
from meterline.core.lago_model import LagoModel
from meterline.core.money import MONEY_CONTEXT

__all__ = ["NUMERIC_AGGREGATIONS", "AggregationType", "BillableMetric", "MetricFilter"]

AggregationType = Literal["count", "sum", "max", "unique_count", "latest", "weighted_sum"]
# Aggregations whose field must hold a number (Lago: ^-?\d+(\.\d+)?$); count and
# unique_count accept any value.
NUMERIC_AGGREGATIONS: frozenset[str] = frozenset({"sum", "max", "latest", "weighted_sum"})


class MetricFilter(LagoModel):
    """A dimension the metric can be split by, e.g. key="model", values=("gpt-4", "gpt-4o")."""

    key: PropertyName  # the usage SQL reads it from each event
    values: tuple[str, ...] = Field(min_length=1)


def _strip_agg(value: Any) -> Any:
    # Lago's API spells aggregation types "sum_agg"; the short name is what code compares.
    if isinstance(value, str) and value.endswith("_agg"):
        return value[: -len("_agg")]
    return value


_ROUNDING = {"round": ROUND_HALF_UP, "ceil": ROUND_CEILING, "floor": ROUND_FLOOR}


class BillableMetric(Stamped):
    """What is measured and how events aggregate into units (count, sum, unique_count...).

    `recurring` metrics (seats, storage) carry their value from one period into the next
    instead of resetting to zero.
    """

    # Custom expressions are not implemented: units come from field_name only.
    LAGO_NEUTRAL = {"expression": (None, "")}

    code: Key
    name: str = Field(min_length=1)
    description: str | None = None
    aggregation_type: Annotated[
        AggregationType, BeforeValidator(_strip_agg)
    ]
    # Required (may not be omitted) unless aggregation_type is count; see _default_field_name.
    field_name: PropertyName | None
    recurring: bool = False
    filters: tuple[MetricFilter, ...] = ()
    rounding_function: Literal["round", "ceil", "floor"] | None = None
    # Bounded so that rounding stays within the 50 digits of the money context.
    rounding_precision: Annotated[Integer, Field(ge=-18, le=18)] | None = None
    weighted_interval: Literal["seconds"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            kind = _strip_agg(data.get("aggregation_type"))
            if kind == "count" and "field_name" not in data:
                data = {**data, "field_name": None}
            if kind == "weighted_sum" and data.get("weighted_interval") is None:
                data = {**data, "weighted_interval": "seconds"}
        return data

    @field_validator("field_name")
    @classmethod
    def _field_name_needed(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("aggregation_type")
        if kind is not None and kind != "count" and not value:
            raise PydanticCustomError("value_is_mandatory", "field_name is required for {kind}", {"kind": kind})
        return value

    @field_validator("recurring")
    @classmethod
    def _recurring_allowed(cls, value: bool, info: ValidationInfo) -> bool:
        # NOTE: Lago only lets sum, unique_count and weighted_sum recur; a recurring count or
        # max has no sensible carry-over value.
        kind = info.data.get("aggregation_type")
        if value and kind is not None and kind not in ("sum", "unique_count", "weighted_sum"):
            raise PydanticCustomError("invalid_recurring", "{kind} metrics cannot be recurring", {"kind": kind})
        return value

    def round_units(self, units: Decimal) -> Decimal:
        """Apply the metric's rounding_function at rounding_precision (Lago semantics: a
        negative precision rounds to tens, hundreds...). Idempotent, so safe to apply twice."""
        if self.rounding_function is None:
            return units
        quantum = Decimal(1).scaleb(-(self.rounding_precision or 0))
        return units.quantize(quantum, _ROUNDING[self.rounding_function], MONEY_CONTEXT)

    def to_lago(self) -> dict[str, Any]:
        body = super().to_lago()
        body["aggregation_type"] = f"{self.aggregation_type}_agg"
        return body

    @property
    def lago_id(self) -> str:
        return lago_id("billable_metric", self.code)
