"""What every HTTP entry point shares: Lago's error bodies, body limits, pagination.

Handlers only translate: authenticate, read the body within its limit, call one service, and
map the outcome to a response. The core raises domain errors (`meterline.core.errors`); this
module alone turns them into Lago's statuses and bodies. A client's mistake is always a 4xx;
only our own failures are 5xx.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from flask import Request, Response

from meterline import logs
from meterline.core.errors import (
    DomainError,
    MalformedInput,
    NotFound,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
)

_log = logs.get("http")
API_PREFIX = "/api/v1/"
R = TypeVar("R")


class HttpError(Exception):
    """An answer that only HTTP has words for (a method, a body size); Lago's body shape."""

    def __init__(self, status: int, error: str, code: str, details: dict[str, Any] | None = None):
        super().__init__(error)
        self.status, self.error, self.code, self.details = status, error, code, details


def method_not_allowed() -> HttpError:
    return HttpError(405, "Method Not Allowed", "method_not_allowed")


def route_not_found() -> NotFound:
    return NotFound("route")


def _body(status: int, error: str, code: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": error, "code": code}
    if details is not None:
        body["error_details"] = details
    return body


def lago_error(err: DomainError | HttpError) -> tuple[int, dict[str, Any]]:
    """A domain error as Lago answers it: (status, body)."""
    if isinstance(err, HttpError):
        return err.status, _body(err.status, err.error, err.code, err.details)
    if isinstance(err, ValidationFailed):
        return 422, _body(422, err.message or "Unprocessable Entity", "validation_errors", err.details)
    if isinstance(err, MalformedInput):
        return 400, _body(400, err.message or "Bad Request", "bad_request", err.details)
    if isinstance(err, NotFound):
        return 404, _body(404, "Not Found", f"{err.resource}_not_found")
    if isinstance(err, Unauthenticated):
        # NOTE: exactly Lago's body; it never says why, so a key scanner learns nothing.
        return 401, {"status": 401, "error": "Unauthorized"}
    if isinstance(err, Unavailable):
        return 503, _body(503, "Service Unavailable", "service_unavailable")
    raise TypeError(f"no HTTP mapping for {type(err).__name__}")  # a new DomainError needs one here


def json_response(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json")


def api_path(request: Request) -> str:
    """The path below /api/v1/, wherever the function is mounted (Cloud Run keeps the path)."""
    path = request.path
    at = path.find(API_PREFIX)
    return path[at + len(API_PREFIX) :].rstrip("/") if at >= 0 else ""


def read_body(request: Request, limit: int) -> bytes:
    too_large = HttpError(413, f"Payload Too Large: the limit is {limit} bytes", "payload_too_large", {"body": ["too_large"]})
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = request.stream.read(limit + 1)  # also bounds a chunked body, which has no length
    if len(data) > limit:
        raise too_large
    return data


def guarded(handler: Callable[[R, Request], Response], request: Request, runtime: R) -> Response:
    """Run a handler, mapping errors to responses. Unexpected errors are logged without payloads."""
    try:
        return handler(runtime, request)
    except (DomainError, HttpError) as err:
        return json_response(*lago_error(err))
    except Exception:
        logs.event(_log, "unhandled error", 50, path=request.path, method=request.method, exc_info=True)
        return json_response(500, _body(500, "Internal Server Error", "internal_error"))


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
