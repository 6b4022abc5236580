"""Checkout links: the payment provider's page where a customer saves a payment method.

    CheckoutLinks(catalog, payments, success_url).checkout_url(external_customer_id)

Lago's `POST /customers/{external_customer_id}/checkout_url`: a new Stripe Checkout session in
setup mode for the customer's Stripe customer (made if absent, as the billing run makes it),
each call a new one (Stripe expires a session after 24 h). A card saved there is attached to
the Stripe customer; the next billing run charges with it the invoices that failed for want of
a payment method (services/billing.py). Nothing is stored here.
"""

from __future__ import annotations

from meterline.core.catalog import Customer
from meterline.core.errors import NotFound, ValidationFailed
from meterline.ports import CatalogStore, PaymentProvider

__all__ = ["CheckoutLinks", "MissingSuccessUrl"]

DEFAULT_PAYMENT_METHOD_TYPES = ("card",)


class MissingSuccessUrl(Exception):
    """No URL is configured for Stripe to send the customer back to (an operator's setting)."""


class CheckoutLinks:
    def __init__(self, catalog: CatalogStore, payments: PaymentProvider | None, success_url: str | None):
        self._catalog = catalog
        self._payments = payments
        self._success_url = success_url or None  # "" (Terraform's unset) is unset

    def checkout_url(self, external_customer_id: str) -> tuple[Customer, str]:
        """The customer and a new checkout URL for them. NotFound for an unknown customer;
        ValidationFailed `no_linked_payment_provider` (Lago's code) when Stripe is not configured
        or the customer names another provider; MissingSuccessUrl when the setting is unset."""
        customer = self._catalog.get_customer(external_customer_id)
        if customer is None:
            raise NotFound("customer")
        config = customer.billing_configuration or {}
        if self._payments is None or config.get("payment_provider") not in (None, "stripe"):
            raise ValidationFailed({"base": ["no_linked_payment_provider"]})
        if self._success_url is None:
            raise MissingSuccessUrl("METERLINE_STRIPE_CHECKOUT_SUCCESS_URL is unset")
        types = config.get("provider_payment_methods") or DEFAULT_PAYMENT_METHOD_TYPES
        if not isinstance(types, (list, tuple)) or not all(isinstance(t, str) and t for t in types):
            raise ValidationFailed({"billing_configuration": ["invalid_value"]})
        provider_customer_id = self._payments.ensure_customer(customer.external_id, customer.name, customer.email)
        return customer, self._payments.checkout_url(provider_customer_id, self._success_url, list(types))
