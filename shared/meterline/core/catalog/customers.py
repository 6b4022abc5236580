"""Customers: who is billed, in which currency and timezone."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

from meterline.core.catalog.base import Stamped, lago_id
from meterline.core.fields import Currency, FreeForm, Integer, Key
from meterline.core.lago_model import LagoModel

__all__ = ["Customer", "CustomerMetadata"]


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("invalid_type", "timezone must be an IANA name such as Europe/Paris")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError("invalid_timezone", "unknown IANA timezone {tz}", {"tz": value}) from None
    return value


# Meterline's own key of `billing_configuration` (Stripe's word; Lago has none): how Stripe
# collects the customer's invoices. Lago's keys (invoice_grace_period, payment_provider,
# provider_customer_id, provider_payment_methods...) are kept as given.
COLLECTION_METHODS = ("charge_automatically", "send_invoice")


def _billing_configuration(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and value.get("collection_method") not in (None, *COLLECTION_METHODS):
        raise PydanticCustomError("invalid_value", "collection_method is charge_automatically or send_invoice")
    return value


class CustomerMetadata(LagoModel):
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
    billing_configuration: Annotated[FreeForm | None, AfterValidator(_billing_configuration)] = None
    metadata: tuple[CustomerMetadata, ...] = ()

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def lago_id(self) -> str:
        return lago_id("customer", self.external_id)
