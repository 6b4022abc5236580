"""Stripe's webhook deliveries: the signature check and the event in Meterline's words.

The signature is checked on the RAW body, before it is parsed: Stripe signs
`"{t}.{body}"` with HMAC-SHA256 and the endpoint's secret, and sends
`Stripe-Signature: t=...,v1=...`. A delivery whose signed timestamp is older than the
tolerance is refused too, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import stripe

from meterline.adapters.stripe.payments import INVOICE_KEY, stripe_units
from meterline.core.numbers import INT64_MAX
from meterline.ports import InvalidSignature, MalformedPaymentEvent, PaymentEvent, PaymentProviderError

__all__ = ["EVENT_MOVES", "StripeWebhooks", "event_from_stripe"]

# What each Stripe event means for our invoice. Stripe sends both invoice.payment_succeeded
# and invoice.paid for a payment (paid also covers an invoice marked paid out of band).
EVENT_MOVES = {
    "invoice.payment_succeeded": "paid",
    "invoice.paid": "paid",
    "invoice.payment_failed": "payment_failed",
    "invoice.finalized": "finalized",
    "invoice.voided": "voided",
}


class StripeWebhooks:
    """`PaymentWebhooks` for one endpoint's signing secret."""

    def __init__(self, secret: str, tolerance_s: int = 300, clock: Callable[[], float] = time.time):
        if not secret:
            raise ValueError("a webhook signing secret is required")
        self._secret = secret
        self._tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, payload: bytes, signature: str | None) -> PaymentEvent:
        if not signature:
            raise InvalidSignature("missing Stripe-Signature header")
        try:
            # The HMAC first (stripe-python's own check), then the age: checked here so that a
            # stale delivery is told apart from a forged one in the answer and the log.
            stripe.WebhookSignature.verify_header(payload, signature, self._secret, tolerance=None)
        except stripe.SignatureVerificationError:
            raise InvalidSignature("signature does not match the body") from None
        except UnicodeDecodeError:
            raise InvalidSignature("body is not UTF-8") from None
        signed_at = _signed_at(signature)
        if signed_at < self._clock() - self._tolerance_s:
            raise InvalidSignature(f"signature is older than {self._tolerance_s} s")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise InvalidSignature("signed body is not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
            raise InvalidSignature("signed body is not a Stripe event")
        try:
            return event_from_stripe(data)
        except MalformedPaymentEvent as exc:
            exc.event_id = data["id"][:255]
            raise


def _signed_at(header: str) -> int:
    """The `t=` of a Stripe-Signature header (already parsed once by the HMAC check)."""
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            return int(value)
    raise InvalidSignature("signature has no timestamp")


def _optional(value: Any, kind: type, field: str) -> Any:
    if value is not None and not isinstance(value, kind):
        raise MalformedPaymentEvent(field)
    return value


# What `datetime.fromtimestamp` takes on every platform, and a bound on any sane event time.
_CREATED_RANGE = (0, 253402300799)  # 1970 .. 9999-12-31T23:59:59Z


def event_from_stripe(data: dict[str, Any]) -> PaymentEvent:
    """A Stripe event (parsed JSON) as a `PaymentEvent`. Events about anything but an invoice
    carry no invoice fields and move nothing. A field of the wrong type or out of range raises
    `MalformedPaymentEvent` naming it: a signed body is Stripe's, but nothing in it is trusted to
    be well-formed before it reaches the stores."""
    if len(data["id"]) > 255 or len(data["type"]) > 255:
        raise MalformedPaymentEvent("id" if len(data["id"]) > 255 else "type")
    envelope = _optional(data.get("data"), dict, "data") or {}
    obj = _optional(envelope.get("object"), dict, "data.object") or {}
    created = data.get("created")
    if created is None:
        occurred_at = datetime.now(UTC)
    elif type(created) is int and _CREATED_RANGE[0] <= created <= _CREATED_RANGE[1]:
        occurred_at = datetime.fromtimestamp(created, tz=UTC)
    else:
        raise MalformedPaymentEvent("created")
    if obj.get("object") != "invoice":
        return PaymentEvent(id=data["id"], type=data["type"], occurred_at=occurred_at, moves_to=None)
    currency = _optional(obj.get("currency"), str, "data.object.currency")
    if currency is not None and not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise MalformedPaymentEvent("data.object.currency")
    paid = data["type"] in ("invoice.paid", "invoice.payment_succeeded")
    amount_field = "amount_paid" if paid else "amount_due"
    amount = obj.get(amount_field)
    if amount is not None and (type(amount) is not int or not 0 <= amount <= INT64_MAX):
        raise MalformedPaymentEvent(f"data.object.{amount_field}")
    if amount is not None and currency is not None:
        try:
            amount = stripe_units(amount, currency, to_stripe=False)
        except (PaymentProviderError, ValueError):
            # Not representable in our unit, or a currency Meterline does not bill in (not one of
            # our invoices): finance gets no amount rather than a wrong one.
            amount = None
    else:
        amount = None
    metadata = _optional(obj.get("metadata"), dict, "data.object.metadata") or {}
    due = obj.get("due_date")
    if due is not None and not (type(due) is int and _CREATED_RANGE[0] <= due <= _CREATED_RANGE[1]):
        raise MalformedPaymentEvent("data.object.due_date")
    return PaymentEvent(
        id=data["id"],
        type=data["type"],
        occurred_at=occurred_at,
        moves_to=EVENT_MOVES.get(data["type"]),
        provider_invoice_id=_optional(obj.get("id"), str, "data.object.id"),
        invoice_id=_optional(metadata.get(INVOICE_KEY), str, f"data.object.metadata.{INVOICE_KEY}"),
        provider_status=_optional(obj.get("status"), str, "data.object.status"),
        hosted_invoice_url=_optional(obj.get("hosted_invoice_url"), str, "data.object.hosted_invoice_url"),
        amount_cents=amount,
        currency=currency.upper() if currency is not None else None,
        total_cents=_our_units(obj, "total", currency),
        amount_paid_cents=_our_units(obj, "amount_paid", currency),
        due_at=datetime.fromtimestamp(due, tz=UTC) if due is not None else None,
    )


def _our_units(obj: dict[str, Any], field: str, currency: str | None) -> int | None:
    """An amount of the invoice object in our minor units; None when absent or not expressible
    (reconciliation then records nothing rather than a wrong figure)."""
    amount = obj.get(field)
    if amount is None:
        return None
    # A total may be negative (credits larger than the charges); an amount paid may not.
    low = -INT64_MAX if field == "total" else 0
    if type(amount) is not int or not low <= amount <= INT64_MAX:
        raise MalformedPaymentEvent(f"data.object.{field}")
    if currency is None:
        return None
    try:
        return stripe_units(amount, currency, to_stripe=False)
    except (PaymentProviderError, ValueError):
        return None
