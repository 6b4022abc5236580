"""Lago's event API over HTTP: /api/v1/events, /events/batch and /events/{transaction_id}.

POSTs go to the ingest service (validate, publish, answer); GETs read `events_deduped`.

Logging: an accepted request logs one DEBUG line (its event count), off at the default level.
Cloud Run's request log already has every request's status and latency, so an INFO line here
would double the log volume of the hottest path for nothing new. Failures log one line each
(a publish not confirmed in the ingest service, anything unexpected in `http.error_response`).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Request, Response

from meterline import logs
from meterline.core.errors import NotFound, ValidationFailed
from meterline.entrypoints import lago
from meterline.entrypoints.http import (
    api_path,
    json_response,
    method_not_allowed,
    page_args,
    read_body,
    route_not_found,
)
from meterline.runtime import IngestRuntime

_log = logs.get("ingest")
_COLLECTION = ("GET", "HEAD", "POST")
_BATCH = ("POST",)
_ONE_EVENT = ("GET", "HEAD")


def events_handler(runtime: IngestRuntime, request: Request) -> Response:
    path = api_path(request)
    if path != "events" and not path.startswith("events/"):
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    rest = path[len("events/") :] if path.startswith("events/") else ""
    if "/" in rest:
        raise route_not_found()

    allowed = _COLLECTION if rest == "" else _BATCH if rest == "batch" else _ONE_EVENT
    if request.method not in allowed:  # HEAD arrives here as GET (`guarded`)
        raise method_not_allowed(allowed)
    if request.method == "POST":
        body = read_body(request, runtime.settings.max_body_bytes)
        if rest == "":
            answer: dict[str, Any] = {"event": lago.event(runtime.service.create(body))}
            logs.event(_log, "events accepted", logging.DEBUG, events=1)
        else:
            events = runtime.service.create_batch(body)
            answer = {"events": lago.events(events)}
            logs.event(_log, "events accepted", logging.DEBUG, events=len(events))
        return json_response(200, answer)

    subscription = request.args.get("external_subscription_id")
    if not subscription:
        raise ValidationFailed({"external_subscription_id": ["value_is_mandatory"]})
    if rest == "":
        page, per_page = page_args(request)
        events, total = runtime.events.list_events(subscription, per_page, (page - 1) * per_page)
        return json_response(200, lago.listing("events", lago.events(events), page, per_page, total))
    event = runtime.events.get_event(subscription, rest)
    if event is None:
        raise NotFound("event")
    return json_response(200, {"event": lago.event(event)})
