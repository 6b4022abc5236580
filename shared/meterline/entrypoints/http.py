"""What every HTTP entry point shares: errors as responses, body limits, pagination arguments.

Handlers only translate: authenticate, read the body within its limit, call one service, and
map the outcome to a response, rendered by `meterline.entrypoints.lago` (Lago's wire format).
The core raises domain errors (`meterline.core.errors`); `error_response` turns each into
Lago's status and body (`lago.error`, the one mapping). A client's mistake is always a 4xx;
only our own failures are 5xx.

Every answer that is not a success is Lago-shaped JSON, whoever produced it: a handler (a
domain error, `HttpError`), the framework (no route, a method its router refuses, a client
that hung up: `error_response` is registered as Flask's error handler in `meterline serve` and
in each function's main.py) or the local server (`local/server.py`, for a request line it
refuses). A 4xx is answered and not logged; a 5xx is ours and logs one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import orjson
from flask import Request, Response
from flask import request as current_request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from meterline import logs
from meterline.core.errors import DomainError, NotFound, ValidationFailed
from meterline.entrypoints import lago
from meterline.entrypoints.lago import HttpError, http_error

_log = logs.get("http")
API_PREFIX = "/api/v1/"
# NOTE: far above any Lago URL (ids are at most 255 characters) and below the local server's
# own limit (http.server refuses a request line over 64 KiB), so that `meterline serve` and
# the functions under gunicorn (which functions-framework runs with no limit) answer alike.
MAX_URL_LENGTH = 16 * 1024
R = TypeVar("R")


def method_not_allowed(allow: Iterable[str] = ()) -> HttpError:
    """405; `allow` lists the methods the resource answers (the Allow header RFC 9110 asks for)."""
    methods = ", ".join(allow)
    return http_error(405, {"Allow": methods} if methods else None)


def route_not_found() -> NotFound:
    return NotFound("route")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


def error_response(err: Exception) -> Response:
    """Any exception as Lago's answer; also Flask's error handler for the framework's own errors.

    A domain error or `HttpError` is mapped as `lago.error` says. A werkzeug HTTP error (no
    route, a method the router refuses, a client that hung up mid-body) gets only its status's
    Lago body: its description is never echoed (functions-framework's 400 quotes the request's
    headers and body). Anything else is our failure: one log line, unless the code that raised
    it logged it already (`logs.failure`), and a 500.
    """
    if isinstance(err, (DomainError, HttpError)):
        status, body = lago.error(err)
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
    except Exception as err:  # noqa: BLE001 - every failure becomes a Lago-shaped answer (and one log line)
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
