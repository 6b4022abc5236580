"""Stripe's webhook deliveries: the signature check and the event in Meterline's words.

The signature is checked on the RAW body, before it is parsed: Stripe signs
`"{t}.{body}"` with HMAC-SHA256 and the endpoint's secret, and sends
`Stripe-Signature: t=...,v1=...`. A delivery whose signed timestamp is older than the
tolerance is refused too, so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import stripe

from meterline.adapters.stripe.payments import INVOICE_KEY, stripe_units
from meterline.ports import InvalidSignature, PaymentEvent, PaymentProviderError

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
        return event_from_stripe(data)


def _signed_at(header: str) -> int:
    """The `t=` of a Stripe-Signature header (already parsed once by the HMAC check)."""
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            return int(value)
    raise InvalidSignature("signature has no timestamp")


def event_from_stripe(data: dict[str, Any]) -> PaymentEvent:
    """A Stripe event (parsed JSON) as a `PaymentEvent`. Events about anything but an invoice
    carry no invoice fields and move nothing."""
    obj = (data.get("data") or {}).get("object") or {}
    created = data.get("created")
    occurred_at = datetime.fromtimestamp(created, tz=timezone.utc) if isinstance(created, int) else datetime.now(timezone.utc)
    if not isinstance(obj, dict) or obj.get("object") != "invoice":
        return PaymentEvent(id=data["id"], type=data["type"], occurred_at=occurred_at, moves_to=None)
    currency = obj.get("currency")
    amount = obj.get("amount_paid") if data["type"] in ("invoice.paid", "invoice.payment_succeeded") else obj.get("amount_due")
    if isinstance(amount, int) and isinstance(currency, str):
        try:
            amount = stripe_units(amount, currency, to_stripe=False)
        except PaymentProviderError:
            amount = None  # not representable in our unit: finance gets no amount rather than a wrong one
    else:
        amount = None
    metadata = obj.get("metadata") or {}
    return PaymentEvent(
        id=data["id"],
        type=data["type"],
        occurred_at=occurred_at,
        moves_to=EVENT_MOVES.get(data["type"]),  # type: ignore[arg-type]
        provider_invoice_id=obj.get("id"),
        invoice_id=metadata.get(INVOICE_KEY) if isinstance(metadata, dict) else None,
        provider_status=obj.get("status"),
        hosted_invoice_url=obj.get("hosted_invoice_url"),
        amount_cents=amount,
        currency=currency.upper() if isinstance(currency, str) else None,
    )
