"""HTTP entry points, shared by the Cloud Functions and `meterline serve`.

They only translate: authenticate, read the body within its limit, call one service, and
map the outcome (or the ClientError) to a response. A client's mistake is always a 4xx;
only our own failures are 5xx.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from flask import Request, Response

from meterline import logs
from meterline.core.errors import (
    ClientError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from meterline.runtime import Runtime, get_runtime

_log = logs.get("http")
API_PREFIX = "/api/v1/"


def json_response(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def api_path(request: Request) -> str:
    """The path below /api/v1/, wherever the function is mounted (Cloud Run keeps the path)."""
    path = request.path
    at = path.find(API_PREFIX)
    return path[at + len(API_PREFIX) :].rstrip("/") if at >= 0 else ""


def read_body(request: Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge({"body": ["too_large"]}, f"Payload Too Large: the limit is {limit} bytes")
    data = request.stream.read(limit + 1)  # also bounds a chunked body, which has no length
    if len(data) > limit:
        raise PayloadTooLarge({"body": ["too_large"]}, f"Payload Too Large: the limit is {limit} bytes")
    return data


def guarded(handler: Callable[[Runtime, Request], Response], request: Request, runtime: Runtime | None = None) -> Response:
    """Run a handler, mapping errors to responses. Unexpected errors are logged without payloads."""
    try:
        return handler(runtime or get_runtime(), request)
    except ClientError as err:
        return json_response(err.status, err.body())
    except ServiceUnavailable as err:
        return json_response(503, err.body())
    except Exception:
        logs.event(_log, "unhandled error", 50, path=request.path, method=request.method, exc_info=True)
        return json_response(500, {"status": 500, "error": "Internal Server Error", "code": "internal_error"})


def page_args(request: Request) -> tuple[int, int]:
    errors: dict[str, list[str]] = {}
    values = {}
    for name, default, top in (("page", 1, 1_000_000), ("per_page", 20, 100)):
        raw = request.args.get(name)
        if raw is None or raw == "":
            values[name] = default
        elif raw.isdigit() and 1 <= int(raw) <= top:
            values[name] = int(raw)
        else:
            errors[name] = ["invalid_value"]
    if errors:
        raise ValidationFailed(errors)
    return values["page"], values["per_page"]


def pagination_meta(page: int, per_page: int, total: int) -> dict[str, Any]:
    pages = max(1, math.ceil(total / per_page)) if total else 0
    return {
        "current_page": page,
        "next_page": page + 1 if page < pages else None,
        "prev_page": page - 1 if page > 1 else None,
        "total_pages": pages,
        "total_count": total,
    }


def events_handler(runtime: Runtime, request: Request) -> Response:
    """/api/v1/events, /api/v1/events/batch, /api/v1/events/{transaction_id} (Lago's event API)."""
    path = api_path(request)
    if path != "events" and not path.startswith("events/"):
        raise NotFound("route")
    runtime.auth.authenticate(request.headers.get("Authorization"))
    rest = path[len("events/") :] if path.startswith("events/") else ""

    if request.method == "POST":
        if rest == "":
            body = read_body(request, runtime.settings.max_body_bytes)
            return json_response(200, runtime.ingest.create(body))
        if rest == "batch":
            body = read_body(request, runtime.settings.max_body_bytes)
            return json_response(200, runtime.ingest.create_batch(body))
        raise MethodNotAllowed()
    if request.method != "GET":
        raise MethodNotAllowed()

    subscription = request.args.get("external_subscription_id")
    if not subscription:
        raise ValidationFailed({"external_subscription_id": ["value_is_mandatory"]})
    if rest == "":
        page, per_page = page_args(request)
        events, total = runtime.warehouse.list_events(subscription, per_page, (page - 1) * per_page)
        return json_response(200, {"events": [e.to_lago() for e in events], "meta": pagination_meta(page, per_page, total)})
    if rest == "batch" or "/" in rest:
        raise NotFound("route")
    event = runtime.warehouse.get_event(subscription, rest)
    if event is None:
        raise NotFound("event")
    return json_response(200, {"event": event.to_lago()})

