"""Cloud Function `stripe_webhook` (HTTP): Stripe's signed invoice events move our invoices. Logic: meterline.services.payments."""

import functions_framework

from meterline.entrypoints.http import error_response, guarded
from meterline.entrypoints.stripe_webhook import stripe_webhook_handler
from meterline.runtime import stripe_webhook_runtime

# A runtime that cannot be built (a bad setting, no secret) and the framework's own errors in
# JSON; and Flask never prints a plain-text traceback
# (`error_response` logs one JSON line). A 5xx makes Stripe deliver the event again.
functions_framework.errorhandler(Exception)(error_response)


@functions_framework.http
def stripe_webhook(request):
    return guarded(stripe_webhook_handler, request, stripe_webhook_runtime())
