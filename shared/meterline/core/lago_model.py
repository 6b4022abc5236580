"""The base of every Lago-shaped model: frozen, strict about unknown fields, and lenient
exactly where Lago's clients need it.

Models are frozen (a plan is priced many times and must not change under the pricer) and
forbid unknown fields: a Lago option Meterline does not implement fails loudly instead of being
ignored, because a silently ignored billing option means a wrong invoice.

Requests as Lago's clients send them: a null for a field that has a default means "not set"
(the default applies), and a Lago option that Meterline does not implement is accepted at its
neutral value (`LAGO_NEUTRAL`: the value meaning Lago's default behaviour) and refused at any
other (`unknown_field`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, cached_property
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["LagoModel"]


def _same(value: Any, neutral: Any) -> bool:
    # Type-exact, because 0 == False and 1 == True in Python.
    return value is neutral or (type(value) is type(neutral) and value == neutral)


class LagoModel(BaseModel):
    """Frozen, strict about unknown fields, and dumpable in Lago's JSON shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Lago options Meterline does not implement -> the values that mean "not used" (Lago's
    # defaults). Accepted at those values only: any other would bill differently from Lago,
    # and is refused as unknown_field.
    LAGO_NEUTRAL: ClassVar[Mapping[str, tuple[Any, ...]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _lago_request(cls, data: Any) -> Any:
        """Drop what a Lago client sends for "not set": a null for a field with a default
        (the default applies) or for a field Meterline does not know, and an unimplemented
        option at its neutral value. A null for a required field stays, and is refused."""
        if not isinstance(data, dict):
            return data
        drop = [key for key, value in data.items() if cls._not_set(key, value)]
        return {k: v for k, v in data.items() if k not in drop} if drop else data

    @classmethod
    def _not_set(cls, key: Any, value: Any) -> bool:
        if key in cls.LAGO_NEUTRAL:
            return any(_same(value, neutral) for neutral in cls.LAGO_NEUTRAL[key])
        if value is not None:
            return False
        field = cls.model_fields.get(key)
        return field is None or (not field.is_required() and field.default is not None)

    def to_lago(self) -> dict[str, Any]:
        """A JSON-ready dict with Lago's field names (Decimals as strings, datetimes ISO-8601)."""
        return self.model_dump(mode="json")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """As pydantic's, but forgetting cached properties (Customer.zone, Plan.amount...),
        which pydantic would copy along and which may depend on an updated field."""
        copy = super().model_copy(update=update, deep=deep)
        for name in _cached_properties(type(self)):
            copy.__dict__.pop(name, None)
        return copy


@cache
def _cached_properties(cls: type) -> tuple[str, ...]:
    return tuple(
        name for klass in cls.__mro__ for name, value in vars(klass).items() if isinstance(value, cached_property)
    )
