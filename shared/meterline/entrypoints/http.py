"""What every HTTP entry point shares: Lago's error bodies, body limits, pagination.

Handlers only translate: authenticate, read the body within its limit, call one service, and
map the outcome to a response. The core raises domain errors (`meterline.core.errors`); this
module alone turns them into Lago's statuses and bodies. A client's mistake is always a 4xx;
only our own failures are 5xx.

Every answer that is not a success is Lago-shaped JSON, whoever produced it: a handler (a
domain error, `HttpError`), the framework (no route, a method its router refuses, a client
that hung up: `error_response` is registered as Flask's error handler in `meterline serve` and
in each function's main.py) or the local server (`local/server.py`, for a request line it
refuses). A 4xx is answered and not logged; a 5xx is ours and logs one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from flask import Request, Response, request as current_request
from werkzeug.exceptions import ClientDisconnected, HTTPException

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
# NOTE: far above any Lago URL (ids are at most 255 characters) and below the local server's
# own limit (http.server refuses a request line over 64 KiB), so that `meterline serve` and
# the functions under gunicorn (which functions-framework runs with no limit) answer alike.
MAX_URL_LENGTH = 16 * 1024
R = TypeVar("R")

# Lago's words for the statuses that only HTTP produces (a router, a server, a size limit).
# Another status gets its standard phrase, and that phrase in snake case as its code.
_HTTP_STATUS = {
    400: ("Bad Request", "bad_request"),
    404: ("Not Found", "route_not_found"),
    405: ("Method Not Allowed", "method_not_allowed"),
    413: ("Payload Too Large", "payload_too_large"),
    414: ("URI Too Long", "uri_too_long"),
    415: ("Unsupported Media Type", "unsupported_media_type"),
    500: ("Internal Server Error", "internal_error"),
    503: ("Service Unavailable", "service_unavailable"),
}


class HttpError(Exception):
    """An answer that only HTTP has words for (a method, a body size); Lago's body shape."""

    def __init__(self, status: int, error: str, code: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status, self.error, self.code, self.details = status, error, code, details
        self.headers = headers


def http_error(status: int, headers: dict[str, str] | None = None) -> HttpError:
    """The Lago-shaped error for a bare HTTP status (405, 414, ...)."""
    if status in _HTTP_STATUS:
        error, code = _HTTP_STATUS[status]
    else:
        try:
            error = HTTPStatus(status).phrase
        except ValueError:
            error = "Error"
        code = re.sub(r"[^a-z0-9]+", "_", error.lower()).strip("_")
    return HttpError(status, error, code, headers=headers)


def method_not_allowed(allow: Iterable[str] = ()) -> HttpError:
    """405; `allow` lists the methods the resource answers (the Allow header RFC 9110 asks for)."""
    methods = ", ".join(allow)
    return http_error(405, {"Allow": methods} if methods else None)


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
        return lago_error(http_error(503))
    raise TypeError(f"no HTTP mapping for {type(err).__name__}")  # a new DomainError needs one here


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


def error_response(err: Exception) -> Response:
    """Any exception as Lago's answer; also Flask's error handler for the framework's own errors.

    A domain error or `HttpError` is mapped as `lago_error` says. A werkzeug HTTP error (no
    route, a method the router refuses, a client that hung up mid-body) gets only its status's
    Lago body: its description is never echoed (functions-framework's 400 quotes the request's
    headers and body). Anything else is our failure: one log line, unless the code that raised
    it logged it already (`logs.failure`), and a 500.
    """
    if isinstance(err, (DomainError, HttpError)):
        status, body = lago_error(err)
        return json_response(status, body, err.headers if isinstance(err, HttpError) else None)
    if isinstance(err, HTTPException) and err.code is not None and err.code < 500:
        allow = dict(err.get_headers()).get("Allow")
        return error_response(http_error(err.code, {"Allow": allow} if allow else None))
    if not logs.was_logged(err):
        logs.failure(_log, "unhandled error", err, path=current_request.path, method=current_request.method)
    status = err.code if isinstance(err, HTTPException) and err.code else 500
    return error_response(http_error(status))


def api_path(request: Request) -> str:
    """The path below /api/v1/, wherever the function is mounted (Cloud Run keeps the path)."""
    path = request.path
    at = path.find(API_PREFIX)
    return path[at + len(API_PREFIX) :].rstrip("/") if at >= 0 else ""


def read_body(request: Request, limit: int) -> bytes:
    too_large = HttpError(413, f"Payload Too Large: the limit is {limit} bytes", "payload_too_large", {"body": ["too_large"]})
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        data = request.stream.read(limit + 1)  # also bounds a chunked body, which has no length
    except (TimeoutError, ClientDisconnected) as err:
        # The server's read timeout (`meterline serve`) ran out mid-body (werkzeug reports it as a
        # disconnect caused by the timeout): the client's fault, so 408, and the connection is
        # closed (its unread rest cannot be told from a next request). A real disconnect is
        # werkzeug's 400 as before: nobody reads that answer.
        if isinstance(err, TimeoutError) or isinstance(err.__context__, TimeoutError):
            raise http_error(408, {"Connection": "close"}) from None
        raise
    if len(data) > limit:
        raise too_large
    return data


def guarded(handler: Callable[[R, Request], Response], request: Request, runtime: R) -> Response:
    """Run a handler, mapping errors to responses. Unexpected errors are logged without payloads."""
    if request.method == "HEAD":
        # HEAD is GET without the body: the handler answers as for GET, and werkzeug's
        # Response leaves the body out (it reads the method from the WSGI environ, not here).
        request.method = "GET"
    try:
        if len(request.path) + len(request.query_string) > MAX_URL_LENGTH:
            raise http_error(414)
        return handler(runtime, request)
    except Exception as err:
        return error_response(err)


def page_args(request: Request) -> tuple[int, int]:
    errors: dict[str, list[str]] = {}
    values = {}
    for name, default, top in (("page", 1, 1_000_000), ("per_page", 20, 100)):
        raw = request.args.get(name)
        if raw is None or raw == "":
            values[name] = default
        # isdigit() alone takes '²' and other Unicode digits, which int() refuses; the length
        # bound keeps int() away from its 4,300-digit limit.
        elif raw.isascii() and raw.isdigit() and len(raw) <= 9 and 1 <= int(raw) <= top:
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
