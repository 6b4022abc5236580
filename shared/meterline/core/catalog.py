"""The product catalog: billable metrics, plans, charges, customers and subscriptions.

Field names and values follow Lago's public API, so `Plan.model_validate(body["plan"])` accepts
what a Lago client sends and `plan.to_lago()` returns a Lago-shaped dict. Models are frozen
(a plan is priced many times and must not change under the pricer) and forbid unknown fields:
a Lago option Meterline does not implement fails loudly instead of being ignored, because a
silently ignored billing option means a wrong invoice.

Amounts are `Decimal`s parsed from decimal strings or ints; floats are refused. Validation
errors map to Lago's 422 `error_details` with `lago_error_details`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from functools import cache, cached_property
from typing import Annotated, Any, Literal, Self, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from meterline.core.money import CURRENCY_EXPONENTS, MONEY_CONTEXT, from_minor_units, parse_decimal

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
    "SubscriptionStatus",
    "VolumeProperties",
    "VolumeRange",
    "filter_key",
    "lago_error_details",
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
# The one list of a subscription record's statuses (`core.subscriptions.SUBSCRIPTION_STATUSES`
# is derived from it).
SubscriptionStatus = Literal["active", "pending", "terminated", "canceled"]

# ---------------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------------


def _amount(value: Any) -> Decimal:
    """Money and rates: decimal strings or ints only. Custom error types become Lago codes."""
    if isinstance(value, (float, bool)):
        raise PydanticCustomError(
            "invalid_type", "amounts must be decimal strings, not {kind}", {"kind": type(value).__name__}
        )
    try:
        return parse_decimal(value)
    except TypeError:
        raise PydanticCustomError("invalid_type", "amounts must be decimal strings or ints") from None
    except ValueError:
        raise PydanticCustomError("invalid_format", "not a decimal number") from None


def _bound(value: Any) -> Decimal:
    """Range bounds are quantities, not money; Lago sends them as JSON numbers, so a float is
    accepted here through its shortest repr (0.1 -> Decimal('0.1'), never 0.1000000000000000055)."""
    if isinstance(value, float) and not isinstance(value, bool):
        value = repr(value)
    return _amount(value)


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


def _aware_utc(value: datetime) -> datetime:
    # NOTE: a naive datetime is ambiguous by up to 26 hours across timezones; a bill that
    # depends on it must be refused, not guessed.
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("invalid_format", "datetime needs a timezone, e.g. 2024-01-31T00:00:00Z")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_aware_utc)]


class _LagoModel(BaseModel):
    """Frozen, strict about unknown fields, and dumpable in Lago's JSON shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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


class BillableMetric(_LagoModel):
    """What is measured and how events aggregate into units (count, sum, unique_count...).

    `recurring` metrics (seats, storage) carry their value from one period into the next
    instead of resetting to zero.
    """

    code: str = Field(min_length=1)
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
    rounding_precision: int | None = None
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
    free_units: Annotated[int, Field(ge=0)] = 0
    package_size: Annotated[int, Field(ge=1)]


class PercentageProperties(_Properties):
    """rate % of each event's amount plus fixed_amount per event, after free events/amount."""

    charge_model: Literal["percentage"] = Field("percentage", exclude=True)
    rate: Amount
    fixed_amount: Amount | None = None
    free_units_per_events: Annotated[int, Field(ge=0)] | None = None
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

    invoice_display_name: str | None = None
    properties: ChargeProperties
    values: dict[str, tuple[str, ...]] = Field(min_length=1)

    @cached_property
    def key(self) -> str:
        # cached: rating asks for it for every subscription (models are frozen, so it is safe)
        return filter_key(self.values)


class Charge(_LagoModel):
    """A usage-based price on one billable metric inside a plan."""

    id: str | None = None
    billable_metric_id: str | None = None
    # Required unless billable_metric_id is given (see _inject_charge_model).
    billable_metric_code: str | None
    charge_model: ChargeModelName
    properties: ChargeProperties
    filters: tuple[ChargeFilter, ...] = ()
    min_amount_cents: Annotated[int, Field(ge=0)] = 0
    pay_in_advance: bool = False
    invoiceable: bool = True
    prorated: bool = False
    invoice_display_name: str | None = None
    tax_codes: tuple[str, ...] = ()

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
        """Stable reference of this charge within its plan (invoice lines, usage keys)."""
        return self.id or self.billable_metric_code or self.billable_metric_id or ""


# ---------------------------------------------------------------------------------------------
# Plans, customers, subscriptions
# ---------------------------------------------------------------------------------------------

class Plan(_LagoModel):
    """A price list: a base fee per billing interval plus usage charges."""

    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str | None = None
    invoice_display_name: str | None = None
    interval: Interval
    amount_cents: Annotated[int, Field(ge=0)]
    amount_currency: Currency
    pay_in_advance: bool = False
    trial_period: Annotated[int, Field(ge=0)] = 0
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
    key: str
    value: str
    display_in_invoice: bool = False


class Customer(_LagoModel):
    """Who is billed. Periods are cut at midnight in the customer's `timezone`."""

    external_id: str = Field(min_length=1)
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
    net_payment_term: Annotated[int, Field(ge=0)] | None = None
    billing_configuration: dict[str, Any] | None = None
    metadata: tuple[CustomerMetadata, ...] = ()

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class Subscription(_LagoModel):
    """A customer on a plan. Lago keeps one record per plan: an upgrade terminates this record
    and starts a new one with the same external_id (`previous_plan_code` links them)."""

    external_id: str = Field(min_length=1)
    external_customer_id: str = Field(min_length=1)
    plan_code: str = Field(min_length=1)
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
