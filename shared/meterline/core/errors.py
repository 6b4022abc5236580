"""Client errors, shaped like Lago's public API so a gateway that posts to Lago works unchanged.

Every error a client can cause is one of these, carries the HTTP status and a machine-readable
body that names the field, and is raised before anything is published: a request is either
accepted whole or rejected whole.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """A 4xx answer. `body()` is what the client receives."""

    status = 400
    error = "Bad Request"
    code = "bad_request"

    def __init__(self, details: dict[str, Any] | None = None, message: str | None = None):
        super().__init__(message or self.error)
        self.details = details
        self.message = message

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "error": self.message or self.error, "code": self.code}
        if self.details is not None:
            body["error_details"] = self.details
        return body


class BadRequest(ClientError):
    """400: the body is not JSON, or the root key (`event`/`events`) is missing."""


class Unauthorized(ClientError):
    status = 401
    error = "Unauthorized"
    code = "unauthorized"

    def body(self) -> dict[str, Any]:
        # NOTE: exactly Lago's body; it never says why, so a key scanner learns nothing.
        return {"status": 401, "error": "Unauthorized"}


class Forbidden(ClientError):
    status = 403
    error = "Forbidden"
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    error = "Not Found"
    code = "not_found"

    def __init__(self, resource: str):
        super().__init__(None)
        self.code = f"{resource}_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    error = "Method Not Allowed"
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    status = 413
    error = "Payload Too Large"
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    error = "Unsupported Media Type"
    code = "unsupported_media_type"


class ValidationFailed(ClientError):
    """422 with `error_details` keyed by field (or, in a batch, by the event's index)."""

    status = 422
    error = "Unprocessable Entity"
    code = "validation_errors"


class ServiceUnavailable(Exception):
    """503: our side failed (for example the publish was not confirmed). The client retries."""

    status = 503

    def body(self) -> dict[str, Any]:
        return {"status": 503, "error": "Service Unavailable", "code": "service_unavailable"}
