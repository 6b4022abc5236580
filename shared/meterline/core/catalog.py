"""The product catalog: billable metrics, plans, charges, customers and subscriptions.

Field names and values follow Lago's public API, so `Plan.model_validate(body["plan"])` accepts
what a Lago client sends and `plan.to_lago()` returns a Lago-shaped dict. Models are frozen
(a plan is priced many times and must not change under the pricer) and forbid unknown fields:
a Lago option Meterline does not implement fails loudly instead of being ignored, because a
silently ignored billing option means a wrong invoice.

Amounts are `Decimal`s parsed from decimal strings or ints; floats are refused. Validation
errors map to Lago's 422 `error_details` with `lago_error_details`.

Requests as Lago's clients send them: a null for a field that has a default means "not set"
(the default applies), and a Lago option that Meterline does not implement is accepted at its
neutral value (`LAGO_NEUTRAL`: the value meaning Lago's default behaviour) and refused at any
other (`unknown_field`).

Ids and timestamps (docs/lago-compatibility.md): every object answers a stable `lago_id`, a
uuid5 of its kind and natural key (`lago_id`), so it is the same on every backend and after a
restore; subscription records store theirs (`core.subscriptions`). `created_at`/`updated_at`
are the store's to set (`Stamped`): they are never part of a request or of `to_lago()`, which
stays the object's definition (what a client sends, what `catalog apply` compares); answers
come from `to_lago_response()`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from functools import cache, cached_property
from typing import Annotated, Any, ClassVar, Literal, Self, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from meterline.core.events import addressable
from meterline.core.jsonbody import Unstorable, storable
from meterline.core.money import CURRENCY_EXPONENTS, MONEY_CONTEXT, from_minor_units, parse_decimal
from meterline.core.numbers import PLACES, number_error

__all__ = [
    "MONTHS_PER_INTERVAL",
    "NUMERIC_AGGREGATIONS",
    "AggregationType",
    "ChargeModelName",
    "Interval",
    "BillableMetric",
    "Charge",
    "ChargeFilter",
    "ChargeProperties",
    "Customer",
    "GraduatedPercentageProperties",
    "GraduatedPercentageRange",
    "GraduatedProperties",
    "GraduatedRange",
    "MetricFilter",
    "PackageProperties",
    "PercentageProperties",
    "Plan",
    "StandardProperties",
    "Subscription",
    "Stamp",
    "Stamped",
    "SubscriptionStatus",
    "UNKNOWN_TIME",
    "VolumeProperties",
    "VolumeRange",
    "Key",
    "filter_key",
    "iso_ms",
    "lago_error_details",
    "lago_id",
    "stamp_time",
]

# The catalog's vocabularies, each written once (pricing's registry of charge models is
# checked against ChargeModelName by a test).
AggregationType = Literal["count", "sum", "max", "unique_count", "latest", "weighted_sum"]
# Aggregations whose field must hold a number (Lago: ^-?\d+(\.\d+)?$); count and
# unique_count accept any value.
NUMERIC_AGGREGATIONS: frozenset[str] = frozenset({"sum", "max", "latest", "weighted_sum"})
ChargeModelName = Literal["standard", "graduated", "volume", "package", "percentage", "graduated_percentage"]
_CHARGE_MODEL_NAMES = frozenset(get_args(ChargeModelName))
Interval = Literal["weekly", "monthly", "quarterly", "semiannual", "yearly"]
# Whole months per interval (weekly has none: it counts in days).
MONTHS_PER_INTERVAL = {"monthly": 1, "quarterly": 3, "semiannual": 6, "yearly": 12}


def _addressable(value: str) -> str:
    # NOTE: a code or external_id is the path segment of its GET route (`/plans/{code}`): with
    # "/" it would be two segments, and a control character matches no route, so such an
    # object could be created and never read back. Events refuse the same characters.
    if not addressable(value):
        raise PydanticCustomError("unaddressable_key", "must hold no '/' and no control character")
    return value


# The type of every code and external_id (1 to 255 characters, addressable in a URL path).
Key = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_addressable)]
# The one list of a subscription record's statuses (`core.subscriptions.SUBSCRIPTION_STATUSES`
# is derived from it).
SubscriptionStatus = Literal["active", "pending", "terminated", "canceled"]

# ---------------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------------


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


def _aware_utc(value: datetime) -> datetime:
    # NOTE: a naive datetime is ambiguous by up to 26 hours across timezones; a bill that
    # depends on it must be refused, not guessed.
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("invalid_format", "datetime needs a timezone, e.g. 2024-01-31T00:00:00Z")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware_utc)]


def iso_ms(value: datetime) -> str:
    """A timestamp as Meterline answers it: UTC, ISO-8601 with milliseconds, like event times."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def stamp_time(value: datetime) -> datetime:
    """A stored timestamp: UTC, truncated to the millisecond it is answered with, so what is
    stored and what is answered are the same instant."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# A stored timestamp (created_at...): dumped as iso_ms.
Stamp = Annotated[datetime, AfterValidator(_aware_utc), PlainSerializer(iso_ms, return_type=str, when_used="json")]

# NOTE: never change this namespace: every lago_id a client has stored derives from it.
_CATALOG_ID_NS = uuid.UUID("0c6f2b4e-51a7-4d8e-9a36-7e1f0b9d2c58")


def lago_id(kind: str, *key: str) -> str:
    """The lago_id of a catalog object: a uuid5 of its kind and natural key, e.g.
    lago_id("plan", "starter") or lago_id("charge", plan_code, charge_ref).

    Derived, not stored, so it is the same on every backend, after a restore and for objects
    written before ids existed. The name is a JSON array, so no key text can make two
    different (kind, key) pairs collide. (Events have their own namespace: core.events.)
    """
    return str(uuid.uuid5(_CATALOG_ID_NS, json.dumps([kind, *key], ensure_ascii=False)))


def _same(value: Any, neutral: Any) -> bool:
    # Type-exact, because 0 == False and 1 == True in Python.
    return value is neutral or (type(value) is type(neutral) and value == neutral)


class _LagoModel(BaseModel):
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


# Answered for an object stored before Meterline kept timestamps, until it is next written:
# a fixed instant that says "unknown", never a time invented at read time.
UNKNOWN_TIME = "1970-01-01T00:00:00.000Z"


class Stamped(_LagoModel):
    """A catalog object the store keeps with its timestamps.

    The stamps are private attributes, not fields: a request cannot set them (they are unknown
    fields there), `to_lago()` leaves them out, and only a store sets them (`with_stamps`),
    keeping created_at from the first write and moving updated_at when the definition changes.
    """

    _created_at: datetime | None = PrivateAttr(None)
    _updated_at: datetime | None = PrivateAttr(None)

    @property
    def created_at(self) -> datetime | None:
        return self._created_at

    @property
    def updated_at(self) -> datetime | None:
        return self._updated_at

    def with_stamps(self, created_at: datetime | None, updated_at: datetime | None) -> Self:
        copy = self.model_copy()
        copy._created_at, copy._updated_at = created_at, updated_at
        return copy

    def stamped_over(self, stored: Self | None, now: datetime) -> Self:
        """This definition as a store writes it over `stored` (None: a create): `stored`
        itself when nothing changed (so updated_at moves only on a real change), else with
        stored's created_at and updated_at = now."""
        if stored is not None and stored.to_lago() == self.to_lago():
            return stored
        now = stamp_time(now)
        created = stored.created_at if stored is not None and stored.created_at is not None else now
        return self.with_stamps(created, now)

    def to_document(self) -> dict[str, Any]:
        """What a store keeps: the Lago definition and the stamps."""
        doc = self.to_lago()
        for name, value in (("created_at", self._created_at), ("updated_at", self._updated_at)):
            if value is not None:
                doc[name] = iso_ms(value)
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Self:
        data = dict(doc)
        stamps = [data.pop(name, None) for name in ("created_at", "updated_at")]
        created, updated = (None if s is None else datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps)
        return cls.model_validate(data).with_stamps(created, updated)

    def _stamp_text(self, value: datetime | None) -> str:
        return UNKNOWN_TIME if value is None else iso_ms(value)


# ---------------------------------------------------------------------------------------------
# Billable metrics
# ---------------------------------------------------------------------------------------------


class MetricFilter(_LagoModel):
    """A dimension the metric can be split by, e.g. key="model", values=("gpt-4", "gpt-4o")."""

    key: str = Field(min_length=1)
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
    field_name: str | None
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

    def to_lago_response(self) -> dict[str, Any]:
        """Lago's billable metric object (what the API answers)."""
        return {
            "lago_id": self.lago_id,
            **self.to_lago(),
            "expression": None,
            "created_at": self._stamp_text(self.created_at),
        }


# ---------------------------------------------------------------------------------------------
# Charge properties: one model per charge model, a discriminated union on `charge_model`
# ---------------------------------------------------------------------------------------------


def _check_ranges(ranges: tuple[Any, ...], code: str) -> tuple[Any, ...]:
    """Lago's range rules: the first from_value is 0, each range starts at the previous
    to_value (+1 for integer tiers, or equal for "adjacent" decimal tiers), every range is
    non-empty, and only the last to_value may be null."""
    if not ranges:
        raise PydanticCustomError(f"missing_{code}", "at least one range is required")
    previous_to: Decimal | None = None
    for index, rng in enumerate(ranges):
        last = index == len(ranges) - 1
        if index == 0:
            if rng.from_value != 0:
                raise PydanticCustomError(f"invalid_{code}", "the first range must start at 0")
        elif rng.from_value not in (previous_to, previous_to + 1):
            raise PydanticCustomError(f"invalid_{code}", "ranges must be contiguous")
        if rng.to_value is None:
            if not last:
                raise PydanticCustomError(f"invalid_{code}", "only the last range may be open-ended")
        else:
            lower = previous_to if previous_to is not None else Decimal(0)
            if rng.to_value < rng.from_value or rng.to_value <= lower:
                raise PydanticCustomError(f"invalid_{code}", "to_value must be above from_value")
            if last:
                raise PydanticCustomError(f"invalid_{code}", "the last range must be open-ended (to_value null)")
        previous_to = rng.to_value
    return ranges


class GraduatedRange(_LagoModel):
    from_value: Bound
    to_value: Bound | None
    per_unit_amount: Amount
    flat_amount: Amount


class VolumeRange(GraduatedRange):
    pass


class GraduatedPercentageRange(_LagoModel):
    from_value: Bound
    to_value: Bound | None
    rate: Amount  # a percentage: "1.5" means 1.5 %
    flat_amount: Amount


class _Properties(_LagoModel):
    # Injected from Charge.charge_model so pydantic can pick the right model; never dumped,
    # because Lago's `properties` object does not carry it.
    charge_model: str = Field(exclude=True)


class StandardProperties(_Properties):
    charge_model: Literal["standard"] = Field("standard", exclude=True)
    amount: Amount


class GraduatedProperties(_Properties):
    charge_model: Literal["graduated"] = Field("graduated", exclude=True)
    graduated_ranges: tuple[GraduatedRange, ...]

    @field_validator("graduated_ranges")
    @classmethod
    def _ranges(cls, value: tuple[GraduatedRange, ...]) -> tuple[GraduatedRange, ...]:
        return _check_ranges(value, "graduated_ranges")


class VolumeProperties(_Properties):
    charge_model: Literal["volume"] = Field("volume", exclude=True)
    volume_ranges: tuple[VolumeRange, ...]

    @field_validator("volume_ranges")
    @classmethod
    def _ranges(cls, value: tuple[VolumeRange, ...]) -> tuple[VolumeRange, ...]:
        return _check_ranges(value, "volume_ranges")


class PackageProperties(_Properties):
    charge_model: Literal["package"] = Field("package", exclude=True)
    amount: Amount
    free_units: Annotated[Integer, Field(ge=0)] = 0
    package_size: Annotated[Integer, Field(ge=1)]


class PercentageProperties(_Properties):
    """rate % of each event's amount plus fixed_amount per event, after free events/amount."""

    charge_model: Literal["percentage"] = Field("percentage", exclude=True)
    rate: Amount
    fixed_amount: Amount | None = None
    free_units_per_events: Annotated[Integer, Field(ge=0)] | None = None
    free_units_per_total_aggregation: Amount | None = None
    per_transaction_min_amount: Amount | None = None
    per_transaction_max_amount: Amount | None = None

    @model_validator(mode="after")
    def _min_below_max(self) -> PercentageProperties:
        low, high = self.per_transaction_min_amount, self.per_transaction_max_amount
        if low is not None and high is not None and low > high:
            raise PydanticCustomError("invalid_value", "per_transaction_min_amount exceeds per_transaction_max_amount")
        return self

    @property
    def needs_event_values(self) -> bool:
        """Free allowances and per-transaction bounds depend on each event's amount."""
        return bool(
            self.free_units_per_events
            or self.free_units_per_total_aggregation
            or self.per_transaction_min_amount is not None
            or self.per_transaction_max_amount is not None
        )


class GraduatedPercentageProperties(_Properties):
    charge_model: Literal["graduated_percentage"] = Field("graduated_percentage", exclude=True)
    graduated_percentage_ranges: tuple[GraduatedPercentageRange, ...]

    @field_validator("graduated_percentage_ranges")
    @classmethod
    def _ranges(cls, value: tuple[GraduatedPercentageRange, ...]) -> tuple[GraduatedPercentageRange, ...]:
        return _check_ranges(value, "graduated_percentage_ranges")


ChargeProperties = Annotated[
    StandardProperties
    | GraduatedProperties
    | VolumeProperties
    | PackageProperties
    | PercentageProperties
    | GraduatedPercentageProperties,
    Field(discriminator="charge_model"),
]


def filter_key(values: dict[str, tuple[str, ...]] | dict[str, list[str]]) -> str:
    """Canonical, order-independent key of a filter: 'model=gpt-4;token_type=input'.

    Used in usage mappings and invoice-line references, so it must not depend on the order a
    client listed keys or values in.
    """
    return ";".join(f"{key}={','.join(sorted(values[key]))}" for key in sorted(values))


class ChargeFilter(_LagoModel):
    """Prices one slice of a charge separately, e.g. values={"model": ["gpt-4"], "token_type": ["input"]}."""

    # Meterline has no plan overrides, so there is nothing to cascade to either way.
    LAGO_NEUTRAL = {"cascade_updates": (None, False, True)}

    invoice_display_name: str | None = None
    properties: ChargeProperties
    values: dict[str, tuple[str, ...]] = Field(min_length=1)

    @cached_property
    def key(self) -> str:
        # cached: rating asks for it for every subscription (models are frozen, so it is safe)
        return filter_key(self.values)


class Charge(_LagoModel):
    """A usage-based price on one billable metric inside a plan.

    `id` is Meterline's own name for the charge (needed to tell two charges on one metric
    apart, else `code`, else the metric's code names it: `ref`). Lago clients reference the
    metric by `billable_metric_id` (its lago_id): the admin service resolves that to
    billable_metric_code before a plan is stored, so a stored charge always names its metric
    by code.
    """

    LAGO_NEUTRAL = {
        "regroup_paid_fees": (None,),
        "applied_pricing_unit": (None,),
        "accepts_target_wallet": (None, False),
        "cascade_updates": (None, False, True),
    }

    id: str | None = None
    billable_metric_id: str | None = None
    # Required unless billable_metric_id is given (see _inject_charge_model).
    billable_metric_code: str | None
    code: str | None = None  # Lago's charge code, unique within its plan
    charge_model: ChargeModelName
    properties: ChargeProperties
    filters: tuple[ChargeFilter, ...] = ()
    min_amount_cents: Annotated[Integer, Field(ge=0)] = 0
    # NOTE: Lago bills a pay-in-advance charge per event, as it arrives; the billing run bills
    # charges at the end of their period only. Accepting `true` would leave such a charge
    # unbilled without a word, so it is refused (`value_is_not_supported`).
    pay_in_advance: bool = False
    invoiceable: bool = True
    prorated: bool = False
    invoice_display_name: str | None = None
    tax_codes: tuple[str, ...] = ()

    @field_validator("pay_in_advance")
    @classmethod
    def _billed_in_arrears(cls, value: bool) -> bool:
        if value:
            raise PydanticCustomError("value_is_not_supported", "charges are billed at the end of their period")
        return value

    @model_validator(mode="before")
    @classmethod
    def _inject_charge_model(cls, data: Any) -> Any:
        """Copy charge_model into properties (and each filter's properties) so the
        discriminated union can choose the properties model; Lago nests them the other way."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        model = data.get("charge_model")
        if "billable_metric_code" not in data and data.get("billable_metric_id"):
            data["billable_metric_code"] = None
        if model in _CHARGE_MODEL_NAMES:
            if isinstance(data.get("properties"), dict):
                data["properties"] = {**data["properties"], "charge_model": model}
            if isinstance(data.get("filters"), (list, tuple)):
                data["filters"] = [
                    {**f, "properties": {**f["properties"], "charge_model": model}}
                    if isinstance(f, dict) and isinstance(f.get("properties"), dict)
                    else f
                    for f in data["filters"]
                ]
        return data

    @model_validator(mode="after")
    def _check(self) -> Charge:
        if not self.billable_metric_code and not self.billable_metric_id:
            raise PydanticCustomError("value_is_mandatory", "billable_metric_code or billable_metric_id is required")
        if self.prorated and self.charge_model not in ("standard", "volume"):
            # NOTE: Lago also prorates graduated charges tier by tier; Meterline does not yet,
            # and refusing beats billing it unprorated.
            raise PydanticCustomError(
                "invalid_prorated_charge_model", "prorated is supported for standard and volume charges"
            )
        keys = [f.key for f in self.filters]
        if len(keys) != len(set(keys)):
            raise PydanticCustomError("duplicated_filters", "two filters have the same values")
        return self

    @cached_property
    def ref(self) -> str:
        """Stable reference of this charge within its plan (invoice lines, usage keys, lago_id)."""
        return self.id or self.code or self.billable_metric_code or self.billable_metric_id or ""

    def to_lago_response(self, plan_code: str, created_at: str) -> dict[str, Any]:
        """Lago's charge object; `created_at` is its plan's (Meterline keeps one per plan)."""
        body = self.to_lago()
        del body["billable_metric_id"]  # a request field: the answer says lago_billable_metric_id
        return {
            "lago_id": lago_id("charge", plan_code, self.ref),
            "lago_billable_metric_id": lago_id("billable_metric", self.billable_metric_code or ""),
            **body,
            "created_at": created_at,
            "regroup_paid_fees": None,
            "accepts_target_wallet": False,
            "applied_pricing_unit": None,
            "taxes": [],
        }


# ---------------------------------------------------------------------------------------------
# Plans, customers, subscriptions
# ---------------------------------------------------------------------------------------------

class Plan(Stamped):
    """A price list: a base fee per billing interval plus usage charges."""

    LAGO_NEUTRAL = {
        "bill_charges_monthly": (None, False),
        "bill_fixed_charges_monthly": (None, False),
        "fixed_charges": (None, []),
        "minimum_commitment": (None,),
        "usage_thresholds": (None, []),
        "cascade_updates": (None, False, True),
        "metadata": (None, {}),
    }

    code: Key
    name: str = Field(min_length=1)
    description: str | None = None
    invoice_display_name: str | None = None
    interval: Interval
    amount_cents: Annotated[Integer, Field(ge=0)]
    amount_currency: Currency
    pay_in_advance: bool = False
    trial_period: Annotated[Integer, Field(ge=0)] = 0
    charges: tuple[Charge, ...] = ()
    tax_codes: tuple[str, ...] = ()

    @field_validator("charges")
    @classmethod
    def _unique_charges(cls, charges: tuple[Charge, ...]) -> tuple[Charge, ...]:
        refs = [c.ref for c in charges]
        if len(refs) != len(set(refs)):
            # Two charges on one metric need distinct ids, or their invoice lines would collide.
            raise PydanticCustomError("duplicated_charge", "charges must have distinct ids or billable metrics")
        return charges

    @cached_property
    def amount(self) -> Decimal:
        """The base fee in major units (Decimal('49.00') for 4900 USD cents)."""
        return from_minor_units(self.amount_cents, self.amount_currency)

    @property
    def lago_id(self) -> str:
        return lago_id("plan", self.code)

    def to_lago_response(self) -> dict[str, Any]:
        """Lago's plan object. active_subscriptions_count and draft_invoices_count are left
        out: counting them would read every subscription on each answer."""
        created = self._stamp_text(self.created_at)
        return {
            "lago_id": self.lago_id,
            **self.to_lago(),
            "charges": [c.to_lago_response(self.code, created) for c in self.charges],
            "created_at": created,
            "bill_charges_monthly": None,
            "bill_fixed_charges_monthly": None,
            "fixed_charges": [],
            "minimum_commitment": None,
            "usage_thresholds": [],
            "taxes": [],
            "metadata": None,
        }

    @property
    def yearly_amount_cents(self) -> Decimal:
        """Base fee per year, to compare plans of different intervals (upgrade vs downgrade)."""
        if self.interval == "weekly":
            return Decimal(self.amount_cents) * 52
        return Decimal(self.amount_cents) * 12 / MONTHS_PER_INTERVAL[self.interval]


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_type", "timezone must be an IANA name such as Europe/Paris")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError("invalid_timezone", "unknown IANA timezone {tz}", {"tz": value}) from None
    return value


class CustomerMetadata(_LagoModel):
    # Metadata is matched by key; the lago_id of an existing entry adds nothing.
    LAGO_NEUTRAL = {"id": (None,)}

    key: str
    value: str
    display_in_invoice: bool = False


class Customer(Stamped):
    """Who is billed. Periods are cut at midnight in the customer's `timezone`."""

    LAGO_NEUTRAL = {
        "logo_url": (None,),
        "finalize_zero_amount_invoice": (None, "inherit"),
        "shipping_address": (None,),
        "integration_customers": (None, []),
        "tax_codes": (None, []),
        "skip_invoice_custom_sections": (None, False),
        "invoice_custom_section_codes": (None, []),
        "billing_entity_code": (None,),
    }

    external_id: Key
    name: str | None = None
    firstname: str | None = None
    lastname: str | None = None
    customer_type: Literal["company", "individual"] | None = None
    email: str | None = None
    currency: Currency | None = None
    timezone: Annotated[str, BeforeValidator(_timezone)] = "UTC"
    legal_name: str | None = None
    legal_number: str | None = None
    tax_identification_number: str | None = None
    phone: str | None = None
    url: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    zipcode: str | None = None
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] | None = None
    net_payment_term: Annotated[Integer, Field(ge=0)] | None = None
    billing_configuration: Annotated[dict[str, Any], AfterValidator(_free_form)] | None = None
    metadata: tuple[CustomerMetadata, ...] = ()

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def lago_id(self) -> str:
        return lago_id("customer", self.external_id)

    def to_lago_response(self) -> dict[str, Any]:
        """Lago's customer object, with Lago's neutral values for what Meterline has not."""
        created = self._stamp_text(self.created_at)
        body = self.to_lago()
        body["metadata"] = [
            {"lago_id": lago_id("customer_metadata", self.external_id, m["key"]), **m, "created_at": created}
            for m in body["metadata"]
        ]
        return {
            "lago_id": self.lago_id,
            **body,
            "created_at": created,
            "updated_at": self._stamp_text(self.updated_at),
            # Lago: the customer's timezone, else the organization's; Meterline's default is UTC.
            "applicable_timezone": self.timezone,
            "logo_url": None,
            "shipping_address": None,
            "finalize_zero_amount_invoice": "inherit",
            "integration_customers": [],
            "taxes": [],
            "skip_invoice_custom_sections": False,
            "applicable_invoice_custom_sections": [],
            "billing_entity_code": None,
        }


class Subscription(_LagoModel):
    """A customer on a plan. Lago keeps one record per plan: an upgrade terminates this record
    and starts a new one with the same external_id (`previous_plan_code` links them).

    `lago_id` and `created_at` are stored with the record when `core.subscriptions` creates
    it: Lago gives each record of a plan change its own id. (None only on records written
    before Meterline kept them; `core.subscriptions.record_lago_id` answers for those.)"""

    lago_id: str | None = None
    created_at: Stamp | None = None
    external_id: Key
    external_customer_id: Key
    plan_code: Key
    name: str | None = None
    billing_time: Literal["calendar", "anniversary"] = "calendar"
    subscription_at: UtcDatetime
    started_at: UtcDatetime | None = None
    ending_at: UtcDatetime | None = None
    terminated_at: UtcDatetime | None = None
    canceled_at: UtcDatetime | None = None
    status: SubscriptionStatus = "active"
    previous_plan_code: str | None = None
    next_plan_code: str | None = None
    downgrade_plan_date: date | None = None

    @model_validator(mode="after")
    def _check_dates(self) -> Subscription:
        if self.status == "terminated" and self.terminated_at is None:
            raise PydanticCustomError("value_is_mandatory", "a terminated subscription needs terminated_at")
        if self.ending_at is not None and self.ending_at <= self.subscription_at:
            raise PydanticCustomError("invalid_ending_at", "ending_at must be after subscription_at")
        return self

    @property
    def start(self) -> datetime:
        """When billing starts: started_at, or subscription_at for a not-yet-started record."""
        return self.started_at or self.subscription_at

    @property
    def end(self) -> datetime | None:
        """When billing stops (exclusive): termination, else the scheduled ending_at."""
        if self.terminated_at is not None:
            return self.terminated_at
        return self.ending_at


# ---------------------------------------------------------------------------------------------
# Lago-style 422 error details
# ---------------------------------------------------------------------------------------------

# Mapping from pydantic error types to Lago error codes. Anything not listed and not a pydantic
# built-in is one of our own PydanticCustomError types (already a Lago-style code such as
# invalid_graduated_ranges or invalid_timezone) and is passed through unchanged.
#   missing, union_tag_not_found                          -> value_is_mandatory
#   *_type, int_from_float, is_instance_of, model_type    -> invalid_type
#   *_parsing, string_pattern_mismatch, timezone_*        -> invalid_format
#   extra_forbidden                                       -> unknown_field (Lago ignores
#                                                            these; we refuse, see module doc)
#   every other built-in (literal_error, greater_than_equal,
#   too_short, value_error, union_tag_invalid, ...)       -> invalid_value
_EXACT_CODES = {
    "unaddressable_key": "invalid_format",
    "missing": "value_is_mandatory",
    "union_tag_not_found": "value_is_mandatory",
    "extra_forbidden": "unknown_field",
    "int_from_float": "invalid_type",
    "is_instance_of": "invalid_type",
    "string_pattern_mismatch": "invalid_format",
    "timezone_aware": "invalid_format",
    "timezone_naive": "invalid_format",
    "datetime_from_date_parsing": "invalid_format",
}
_OUR_CODES_PREFIXES = ("invalid_", "missing_", "value_is_", "duplicated_", "unknown_")


def _lago_code(error_type: str) -> str:
    if error_type in _EXACT_CODES:
        return _EXACT_CODES[error_type]
    if error_type.endswith("_type"):
        return "invalid_type"
    if error_type.endswith("_parsing"):
        return "invalid_format"
    if error_type.startswith(_OUR_CODES_PREFIXES):
        return error_type
    return "invalid_value"


def _error_field(loc: tuple[int | str, ...]) -> str:
    """Dotted field path ('charges.0.properties.graduated_ranges'), without the union tags
    pydantic inserts for discriminated unions; 'base' for whole-object errors (Lago's key)."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if index and loc[index - 1] == "properties" and part in _CHARGE_MODEL_NAMES:
            continue
        parts.append(str(part))
    return ".".join(parts) or "base"


def lago_error_details(exc: ValidationError) -> dict[str, list[str]]:
    """Translate a pydantic ValidationError into Lago's `error_details` ({"field": ["code"]})."""
    details: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = tuple(error["loc"])
        # A bad charge_model is reported on charge_model itself; the union-tag error it causes
        # on `properties` (we inject the tag) would only be noise.
        if error["type"] in ("union_tag_invalid", "union_tag_not_found") and loc and loc[-1] in ("properties",):
            continue
        codes = details.setdefault(_error_field(loc), [])
        code = _lago_code(error["type"])
        if code not in codes:
            codes.append(code)
    return details
