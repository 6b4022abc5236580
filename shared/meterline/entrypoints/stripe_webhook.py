"""The Stripe webhook (HTTP): verify the signature on the raw body, then one service call.

    POST /  (any path)  Stripe-Signature: t=...,v1=...   body: a Stripe event

  * 400 JSON when the signature is missing, wrong or older than the tolerance, or the signed
    body is not an event: nothing was read beyond the signature, nothing changes;
  * 200 {"received": true, "outcome": ...} once the event is handled, or was handled before,
    or is of a type Meterline does not act on (logged);
  * 503 when the event is ahead of our invoice (still a draft: the billing run owns
    finalization); Stripe delivers it again later;
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
from meterline.entrypoints.http import HttpError, json_response, method_not_allowed, read_body
from meterline.ports import InvalidSignature
from meterline.runtime import _FunctionRuntime, adapters_for, once

_log = logs.get("stripe_webhook")

# Stripe's events are a few kB; a large body is refused before its signature is even computed.
MAX_BODY_BYTES = 256 * 1024


def stripe_webhook_handler(runtime: StripeWebhookRuntime, request: Request) -> Response:
    from meterline.services.payments import NotYet

    if request.method != "POST":
        raise method_not_allowed(["POST"])
    body = read_body(request, MAX_BODY_BYTES)  # the raw bytes: the signature covers exactly these
    try:
        event = runtime.webhooks.verify(body, request.headers.get("Stripe-Signature"))
    except InvalidSignature as exc:
        logs.event(_log, "webhook delivery refused", logging.WARNING, reason=str(exc))
        raise HttpError(400, "Bad Request", "invalid_signature", {"stripe_signature": [str(exc)]}) from None
    try:
        result = runtime.payments.handle(event)
    except NotYet as exc:
        logs.event(_log, "webhook event deferred", logging.INFO, event_id=event.id, event_type=event.type, reason=str(exc))
        return json_response(503, {"status": 503, "error": "Service Unavailable", "code": "invoice_not_finalized_yet"},
                             headers={"Retry-After": "60"})
    body_out: dict[str, Any] = {"received": True, "outcome": result.outcome.value}
    if result.invoice_id is not None:
        body_out["invoice_id"] = result.invoice_id
    return json_response(200, body_out)


# -- composition -------------------------------------------------------------------------------
# What the `stripe_webhook` function builds. It belongs beside the other runtimes in runtime.py
# (the lead wires it there: `_FACTORIES["stripe_webhook"]`, and LocalRuntime.stripe_webhook for
# `meterline serve`); until then `stripe_webhook_runtime()` below builds it once per process.


class StripeWebhookRuntime(_FunctionRuntime):
    """Cloud Function `stripe_webhook`: the signature check, the invoice store, the processed
    event ids and the finance tables. No API keys (Stripe signs instead) and no Stripe client:
    the webhook never calls Stripe back. Needs METERLINE_STRIPE_WEBHOOK_SECRET."""

    @once
    def webhooks(self):
        from meterline.adapters.stripe.webhooks import StripeWebhooks
        from meterline.config import ConfigError

        secret = self.settings.stripe_webhook_secret
        if secret is None or not secret.get_secret_value():
            raise ConfigError("the stripe_webhook function needs METERLINE_STRIPE_WEBHOOK_SECRET")
        return StripeWebhooks(secret.get_secret_value(), self.settings.stripe_webhook_tolerance_seconds)

    @once
    def payments(self):
        from meterline.services.payments import PaymentEvents

        a = self.adapters
        return PaymentEvents(a.invoices, a.processed_events, a.warehouse)

    def warm(self) -> None:
        self.webhooks, self.payments  # noqa: B018 - fail fast on a missing secret, at cold start


_runtime: StripeWebhookRuntime | None = None
_runtime_lock = threading.Lock()


def stripe_webhook_runtime() -> StripeWebhookRuntime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                from meterline.config import get_settings

                runtime = StripeWebhookRuntime(adapters_for(get_settings()))
                runtime.warm()
                _runtime = runtime
    return _runtime


def set_stripe_webhook_runtime(runtime: StripeWebhookRuntime | None) -> None:
    """Install a runtime for the function (tests); None resets to lazy building."""
    global _runtime
    with _runtime_lock:
        _runtime = runtime
