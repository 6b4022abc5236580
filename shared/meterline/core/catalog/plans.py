"""Plans and their charges: a base fee per billing interval plus usage-based charges.

A charge's `properties` are its charge model's (`ChargeProperties`, a union discriminated on
`charge_model`); each model's properties live beside its pricing, in
`meterline.core.pricing.charge_models`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from meterline.core.catalog.base import Stamped, lago_id
from meterline.core.events import PROPERTY_NAME_PATTERN, is_property_name
from meterline.core.fields import Currency, Integer, Key, is_stored
from meterline.core.lago_model import LagoModel
from meterline.core.money import MONEY_CONTEXT, currency_exponent, from_minor_units, round_money
from meterline.core.numbers import INT64_MAX
from meterline.core.pricing.charge_models import ChargeProperties
from meterline.core.pricing.periods import MONTHS_PER_INTERVAL

__all__ = [
    "CHARGE_MODEL_NAMES",
    "MONTHS_PER_INTERVAL",
    "Charge",
    "ChargeFilter",
    "ChargeModelName",
    "Interval",
    "Plan",
    "filter_key",
]

# Pricing's registry of charge models is checked against ChargeModelName by a test.
ChargeModelName = Literal["standard", "graduated", "volume", "package", "percentage", "graduated_percentage"]
CHARGE_MODEL_NAMES = frozenset(get_args(ChargeModelName))
Interval = Literal["weekly", "monthly", "quarterly", "semiannual", "yearly"]


def filter_key(values: dict[str, tuple[str, ...]] | dict[str, list[str]]) -> str:
    """Canonical, order-independent key of a filter: 'model=gpt-4;token_type=input'.

    Used in usage mappings and invoice-line references, so it must not depend on the order a
    client listed keys or values in.
    """
    return ";".join(f"{key}={','.join(sorted(values[key]))}" for key in sorted(values))


class ChargeFilter(LagoModel):
    """Prices one slice of a charge separately, e.g. values={"model": ["gpt-4"], "token_type": ["input"]}."""

    # Meterline has no plan overrides, so there is nothing to cascade to either way.
    LAGO_NEUTRAL = {"cascade_updates": (None, False, True)}

    invoice_display_name: str | None = None
    properties: ChargeProperties
    values: dict[str, tuple[str, ...]] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _readable_keys(cls, values: dict[str, tuple[str, ...]], info: ValidationInfo) -> dict[str, tuple[str, ...]]:
        # The keys are event properties the usage SQL reads (core.fields.PropertyName); the
        # values need no rule, the SQL quotes them as literals.
        if not is_stored(info) and not all(is_property_name(key) for key in values):
            raise PydanticCustomError("invalid_format", "filter keys must match {pattern} to be read from events",
                                      {"pattern": PROPERTY_NAME_PATTERN})
        return values

    @cached_property
    def key(self) -> str:
        # cached: rating asks for it for every subscription (models are frozen, so it is safe)
        return filter_key(self.values)


class Charge(LagoModel):
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
        if model in CHARGE_MODEL_NAMES:
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

    @field_validator("charges")
    @classmethod
    def _prices_in_the_money_domain(cls, charges: tuple[Charge, ...], info: ValidationInfo) -> tuple[Charge, ...]:
        """A price that one unit already takes beyond the money domain (a fee's minor units are
        a signed 64-bit integer, `core.money`) could never be billed: refused here, not found
        at the end of the period. What usage times a price makes is checked at rating."""
        currency = info.data.get("amount_currency")
        if currency is None or is_stored(info):
            return charges  # an invalid currency is its own error
        largest = max((abs(p) for c in charges for props in (c.properties, *(f.properties for f in c.filters))
                       for p in props.prices()), default=None)
        if largest is not None and round_money(largest, currency).scaleb(currency_exponent(currency), MONEY_CONTEXT) > INT64_MAX:
            raise PydanticCustomError("value_is_out_of_range",
                                      "a price beyond {limit} minor units of {currency} cannot be billed",
                                      {"limit": INT64_MAX, "currency": currency})
        return charges

    @cached_property
    def amount(self) -> Decimal:
        """The base fee in major units (Decimal('49.00') for 4900 USD cents)."""
        return from_minor_units(self.amount_cents, self.amount_currency)

    @property
    def lago_id(self) -> str:
        return lago_id("plan", self.code)

    @property
    def yearly_amount_cents(self) -> Decimal:
        """Base fee per year, to compare plans of different intervals (upgrade vs downgrade)."""
        if self.interval == "weekly":
            return Decimal(self.amount_cents) * 52
        return Decimal(self.amount_cents) * 12 / MONTHS_PER_INTERVAL[self.interval]
