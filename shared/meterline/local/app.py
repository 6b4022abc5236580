"""`meterline serve`: every function in one local HTTP server, on the embedded adapters.

The routes call the same handlers as the Cloud Functions, and a background worker plays
Pub/Sub's part, pushing queued messages to the process service.
"""

from __future__ import annotations

from flask import Flask, request

from meterline.entrypoints.admin import ROOT_KEYS, admin_handler
from meterline.entrypoints.http import events_handler, guarded, json_response
from meterline.runtime import Runtime

# Each Cloud Function's handler, by the first path segment below /api/v1/. Later functions
# (admin, portal, webhooks) register here too.
ROUTES = {"events": events_handler, **{resource: admin_handler for resource in ROOT_KEYS}}


def create_app(runtime: Runtime) -> Flask:
    app = Flask("meterline")

    @app.route("/api/v1/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def api(rest: str):
        handler = ROUTES.get(rest.split("/", 1)[0])
        if handler is None:
            return json_response(404, {"status": 404, "error": "Not Found", "code": "route_not_found"})
        return guarded(handler, request, runtime)

    @app.get("/healthz")
    def healthz():
        return json_response(200, {"status": "ok"})

    return app
