"""`meterline serve`'s web app: every function's routes in one Flask app.

The routes call the same handlers as the Cloud Functions, each with its own function's
runtime, so what runs locally is what is deployed.
"""

from __future__ import annotations

from flask import Flask, request

from meterline.entrypoints.admin import ROOT_KEYS, admin_handler
from meterline.entrypoints.events import events_handler
from meterline.entrypoints.http import guarded, json_response
from meterline.runtime import LocalRuntime


def create_app(runtime: LocalRuntime) -> Flask:
    # Each Cloud Function's handler and runtime, by the first path segment below /api/v1/.
    routes = {
        "events": (events_handler, runtime.ingest),
        **{resource: (admin_handler, runtime.admin) for resource in ROOT_KEYS},
    }
    app = Flask("meterline")

    @app.route("/api/v1/<path:rest>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def api(rest: str):
        route = routes.get(rest.split("/", 1)[0])
        if route is None:
            return json_response(404, {"status": 404, "error": "Not Found", "code": "route_not_found"})
        handler, function_runtime = route
        return guarded(handler, request, function_runtime)

    @app.get("/healthz")
    def healthz():
        return json_response(200, {"status": "ok"})

    return app
