"""`meterline serve`'s web app: every function's routes in one Flask app.

The routes call the same handlers as the Cloud Functions, each with its own function's
runtime, so what runs locally is what is deployed; which function serves a path is
`meterline.routes`, the table the load balancer's URL map is made from. As under functions-framework, whose
catch-all rule has no method list, every method reaches a handler, which answers 405 itself;
what the router refuses (a path outside /api/v1/..., one holding a newline) is answered by
`error_response` in Lago's JSON shape, as in the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.routing import Rule

from meterline.entrypoints.admin import admin_handler
from meterline.entrypoints.bill import bill_handler
from meterline.entrypoints.events import events_handler
from meterline.entrypoints.http import error_response, guarded, json_response, route_not_found
from meterline.entrypoints.portal import portal_handler
from meterline.entrypoints.stripe_webhook import stripe_webhook_handler
from meterline.routes import function_for
from meterline.runtime import LocalRuntime


def _no_route(runtime: None, request: Request):
    raise route_not_found()


def create_app(runtime: LocalRuntime) -> Flask:
    # Each Cloud Function's handler and runtime, by the function `meterline.routes` names.
    functions: dict[str, tuple[Callable[[Any, Request], Response], object]] = {
        "ingest": (events_handler, runtime.ingest),
        "admin": (admin_handler, runtime.admin),  # the catalog and invoices APIs
        "portal": (portal_handler, runtime.portal),
        # The bill function: on Google Cloud the scheduler's OIDC token; here an API key.
        "bill": (lambda rt, req: bill_handler(rt, req, authenticate=True), runtime.bill),
        # Stripe's webhook: signed by Stripe, no API key (needs METERLINE_STRIPE_WEBHOOK_SECRET).
        "stripe_webhook": (stripe_webhook_handler, runtime.stripe_webhook),
    }
    app = Flask("meterline")
    # No 308 redirect to a "cleaned" path (`/api/v1//events`): an HTML answer no client reads,
    # and a path that is not a route is a JSON 404 like any other.
    app.url_map.merge_slashes = False
    app.register_error_handler(Exception, error_response)

    def dispatch(rest: str):
        # The same table as the load balancer's URL map (terraform/lb.tf), bill included.
        handler, function_runtime = functions.get(function_for(request.path) or "", (_no_route, None))
        return guarded(handler, request, function_runtime)

    # A werkzeug Rule without methods matches every method (Flask's route() would list them).
    # /api/v1/... (Lago's API) and /portal/... (the customer portal's page, data and files).
    app.url_map.add(Rule("/api/v1/<path:rest>", endpoint="api"))
    app.url_map.add(Rule("/portal/<path:rest>", endpoint="portal"))
    app.view_functions["api"] = app.view_functions["portal"] = dispatch

    def healthz():
        return json_response(200, {"status": "ok"})

    # GET and HEAD; OPTIONS is a JSON 405 like everywhere else, not Flask's empty answer.
    app.add_url_rule("/healthz", view_func=healthz, methods=["GET"], provide_automatic_options=False)
    return app
