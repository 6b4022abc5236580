"""Lago's event API over HTTP: /api/v1/events, /events/batch and /events/{transaction_id}.

POSTs go to the ingest service (validate, publish, answer); GETs read `events_deduped`.
"""

from __future__ import annotations

from flask import Request, Response

from meterline.core.errors import NotFound, ValidationFailed
from meterline.entrypoints.http import (
    api_path,
    json_response,
    method_not_allowed,
    page_args,
    pagination_meta,
    read_body,
    route_not_found,
)
from meterline.runtime import IngestRuntime


def events_handler(runtime: IngestRuntime, request: Request) -> Response:
    path = api_path(request)
    if path != "events" and not path.startswith("events/"):
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    rest = path[len("events/") :] if path.startswith("events/") else ""

    if request.method == "POST":
        if rest == "":
            body = read_body(request, runtime.settings.max_body_bytes)
            return json_response(200, runtime.service.create(body))
        if rest == "batch":
            body = read_body(request, runtime.settings.max_body_bytes)
            return json_response(200, runtime.service.create_batch(body))
        raise method_not_allowed()
    if request.method != "GET":
        raise method_not_allowed()

    subscription = request.args.get("external_subscription_id")
    if not subscription:
        raise ValidationFailed({"external_subscription_id": ["value_is_mandatory"]})
    if rest == "":
        page, per_page = page_args(request)
        events, total = runtime.events.list_events(subscription, per_page, (page - 1) * per_page)
        return json_response(200, {"events": [e.to_lago() for e in events], "meta": pagination_meta(page, per_page, total)})
    if rest == "batch" or "/" in rest:
        raise route_not_found()
    event = runtime.events.get_event(subscription, rest)
    if event is None:
        raise NotFound("event")
    return json_response(200, {"event": event.to_lago()})
