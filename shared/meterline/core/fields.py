"""The field types of Meterline's Lago-shaped models (the catalog, each charge model's
properties, subscription requests): how a request's values are read and refused.

Amounts are `Decimal`s parsed from decimal strings or ints; floats are refused (a range bound
alone takes a JSON number, through its shortest repr). Numbers share the numeric domain
(`meterline.core.numbers`). A refusal is a `PydanticCustomError` whose type is already a Lago
error code, or is mapped to one by `meterline.core.catalog.errors`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, ValidationInfo
from pydantic_core import PydanticCustomError

from meterline.core.clock import iso_ms
from meterline.core.events import PROPERTY_NAME_PATTERN, addressable, is_property_name
from meterline.core.jsonbody import Unstorable, storable
from meterline.core.money import CURRENCY_EXPONENTS, parse_decimal
from meterline.core.numbers import PLACES, number_error

__all__ = [
    "STORED",
    "Amount",
    "Bound",
    "Currency",
    "FreeForm",
    "Integer",
    "Key",
    "PropertyName",
    "Stamp",
    "UtcDatetime",
    "is_stored",
    "stamp_time",
]

# The validation context of a stored catalog object read back (`Stamped.from_document`). A rule
# added after an object was stored must not make it unreadable, or one bad object would stop
# every list of the catalog; the rules that read it (`is_stored`) let it load, and billing
# flags the subscriptions that use it instead.
STORED = {"stored": True}


def is_stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def _addressable(value: str) -> str:
    # NOTE: a code or external_id is the path segment of its GET route (`/plans/{code}`): with
    # "/" it would be two segments, and a control character matches no route, so such an
    # object could be created and never read back. Events refuse the same characters.
    if not addressable(value):
        raise PydanticCustomError("unaddressable_key", "must hold no '/' and no control character")
    return value


# The type of every code and external_id (1 to 255 characters, addressable in a URL path).
Key = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_addressable)]


def _property_name(value: str, info: ValidationInfo) -> str:
    """An event property billing reads (`meterline.core.events.is_property_name`)."""
    if not is_property_name(value) and not is_stored(info):
        raise PydanticCustomError("invalid_format", "must match {pattern} to be read from events",
                                  {"pattern": PROPERTY_NAME_PATTERN})
    return value


PropertyName = Annotated[str, AfterValidator(_property_name)]


def _in_domain(value: Decimal | int, places: int | None) -> None:
    """The numeric domain (`meterline.core.numbers`): catalog numbers share its range."""
    problem = number_error(value, places)
    if problem is not None:
        precision = "" if places is None else f", at most {places} decimals"
        raise PydanticCustomError(problem, f"outside Meterline's numbers (|x| < 10^18{precision})")


def _decimal(value: Any, places: int | None) -> Decimal:
    """Decimal strings or ints only, in the numeric domain. Custom error types become Lago codes."""
    if isinstance(value, (float, bool)):
        raise PydanticCustomError(
            "invalid_type", "amounts must be decimal strings, not {kind}", {"kind": type(value).__name__}
        )
    try:
        result = parse_decimal(value)
    except TypeError:
        raise PydanticCustomError("invalid_type", "amounts must be decimal strings or ints") from None
    except ValueError:
        raise PydanticCustomError("invalid_format", "not a decimal number") from None
    _in_domain(result, places)
    return result


def _amount(value: Any) -> Decimal:
    """Money and rates: any number of decimals (see `meterline.core.numbers`)."""
    return _decimal(value, None)


def _bound(value: Any) -> Decimal:
    """Range bounds are quantities, not money, so they are the warehouse's quantities (at most 9
    decimals); Lago sends them as JSON numbers, so a float is accepted here through its shortest
    repr (0.1 -> Decimal('0.1'), never 0.1000000000000000055)."""
    if isinstance(value, float) and not isinstance(value, bool):
        value = repr(value)
    return _decimal(value, PLACES)


def _integer(value: int) -> int:
    """Counts, cents and sizes share the domain's range: a larger int could be neither stored
    (orjson writes 64 bits at most) nor billed."""
    _in_domain(value, None)
    return value


Integer = Annotated[int, AfterValidator(_integer)]


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise PydanticCustomError("invalid_amount", "must be zero or more")
    return value


def _as_str(value: Decimal) -> str:
    return str(value)


_DecimalJson = PlainSerializer(_as_str, return_type=str, when_used="json")
Amount = Annotated[Decimal, BeforeValidator(_amount), AfterValidator(_non_negative), _DecimalJson]
Bound = Annotated[Decimal, BeforeValidator(_bound), AfterValidator(_non_negative), _DecimalJson]


def _currency(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_type", "currency must be a string")
    if value not in CURRENCY_EXPONENTS:
        raise PydanticCustomError("invalid_value", "unknown ISO 4217 currency {code}", {"code": value})
    return value


Currency = Annotated[str, BeforeValidator(_currency)]

# How deep a free-form field (a customer's billing_configuration) may nest: far under the 254
# levels orjson writes, the catalog document's own levels included.
_FREE_FORM_DEPTH = 32


def _free_form(value: dict[str, Any]) -> dict[str, Any]:
    """A free-form JSON field must round-trip exactly through the catalog store (orjson): ints
    within 64 bits (a bigger one came back as a float), finite numbers, bounded nesting."""
    try:
        return storable(value, _FREE_FORM_DEPTH, floats=True)
    except Unstorable as problem:
        raise PydanticCustomError(problem.code, "cannot be stored exactly") from None


FreeForm = Annotated[dict[str, Any], AfterValidator(_free_form)]


def _aware_utc(value: datetime) -> datetime:
    # NOTE: a naive datetime is ambiguous by up to 26 hours across timezones; a bill that
    # depends on it must be refused, not guessed.
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("invalid_format", "datetime needs a timezone, e.g. 2024-01-31T00:00:00Z")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware_utc)]


def stamp_time(value: datetime) -> datetime:
    """A stored timestamp: UTC, truncated to the millisecond it is answered with, so what is
    stored and what is answered are the same instant."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# A stored timestamp (created_at...): dumped as iso_ms.
Stamp = Annotated[datetime, AfterValidator(_aware_utc), PlainSerializer(iso_ms, return_type=str, when_used="json")]
