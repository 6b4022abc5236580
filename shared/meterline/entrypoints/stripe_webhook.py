"""The Stripe webhook (HTTP): verify the signature on the raw body, then one service call.

    POST /  (any path)  Stripe-Signature: t=...,v1=...   body: a Stripe event

  * 400 JSON when the signature is missing, wrong or older than the tolerance, or the signed
    body is not an event: nothing was read beyond the signature, nothing changes;
  * 200 {"received": true, "outcome": ...} once the event is handled, or was handled before,
    or is of a type Meterline does not act on (logged);
  * 503 when the event is ahead of our invoice (still a draft: the billing run owns
    finalization); Stripe delivers it again later;
  * 503 `webhook_not_configured` while METERLINE_STRIPE_WEBHOOK_SECRET is unset: nothing can be
    verified, so nothing is read; Stripe retries for days, so no event is lost once the secret is
    set. Logged once per process (not once per delivery);
  * 5xx on our own failure (a store or the warehouse down): raising gets a redelivery, and
    nothing was recorded as processed.

The logic is `services.payments.PaymentEvents`; reading Stripe's format is
`adapters.stripe.webhooks`. This module only translates HTTP.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Request, Response

from meterline import logs
from meterline.config import ConfigError
from meterline.entrypoints.http import json_response, method_not_allowed, read_body
from meterline.entrypoints.lago import HttpError
from meterline.ports import InvalidSignature, MalformedPaymentEvent
from meterline.runtime import StripeWebhookRuntime

_log = logs.get("stripe_webhook")

# Stripe's events are a few kB; a large body is refused before its signature is even computed.
MAX_BODY_BYTES = 256 * 1024


_warned = threading.Event()


def _not_configured(exc: ConfigError) -> None:
    # Once: a misconfigured endpoint that Stripe retries must not flood the log.
    if not _warned.is_set():
        _warned.set()
        logs.event(_log, "stripe webhook not configured; deliveries answered 503 until it is", logging.ERROR,
                   reason=str(exc))


def stripe_webhook_handler(runtime: StripeWebhookRuntime, request: Request) -> Response:
    from meterline.services.payments import NotYet

    if request.method != "POST":
        raise method_not_allowed(["POST"])
    body = read_body(request, MAX_BODY_BYTES)  # the raw bytes: the signature covers exactly these
    try:
        webhooks = runtime.webhooks
    except ConfigError as exc:
        _not_configured(exc)
        raise HttpError(503, "Service Unavailable", "webhook_not_configured", headers={"Retry-After": "300"}) from None
    try:
        event = webhooks.verify(body, request.headers.get("Stripe-Signature"))
    except MalformedPaymentEvent as exc:
        # Signed by Stripe, yet not readable: refused whole and recorded in the log (Stripe
        # shows the 400 in its dashboard and retries; nothing was applied).
        logs.event(_log, "webhook event refused", logging.WARNING, event_id=exc.event_id, field=exc.field)
        raise HttpError(400, "Bad Request", "invalid_event", {exc.field: ["invalid_format"]}) from None
    except InvalidSignature as exc:
        logs.event(_log, "webhook delivery refused", logging.WARNING, reason=str(exc))
        raise HttpError(400, "Bad Request", "invalid_signature", {"stripe_signature": [str(exc)]}) from None
    try:
        result = runtime.payment_events.handle(event)
    except NotYet as exc:
        logs.event(_log, "webhook event deferred", logging.INFO, event_id=event.id, event_type=event.type, reason=str(exc))
        raise HttpError(503, "Service Unavailable", "invoice_not_finalized_yet", headers={"Retry-After": "60"}) from None
    body_out: dict[str, Any] = {"received": True, "outcome": result.outcome.value}
    if result.invoice_id is not None:
        body_out["invoice_id"] = result.invoice_id
    return json_response(200, body_out)
