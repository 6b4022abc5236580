"""Domain errors: what the core refuses, or cannot do right now. No HTTP here.

The core raises these from any entry point (an HTTP request, a Pub/Sub message, a scheduled
billing run); only the HTTP edge (`meterline.entrypoints.lago.error`) turns them into
Lago's status codes and bodies. A scheduler-triggered run logs them instead.

Every client mistake names its field in `details`, in Lago's `error_details` shape:
{"timestamp": ["invalid_format"]}, or keyed by index in a batch: {"1": {...}}.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class: something the caller asked for that the core will not do."""


class ValidationFailed(DomainError):
    """The input is well-formed but breaks a rule (Lago: 422 validation_errors)."""

    def __init__(self, details: dict[str, Any], message: str | None = None):
        super().__init__(message or "invalid input")
        self.details = details
        self.message = message


class MalformedInput(DomainError):
    """The input cannot be read at all: not JSON, or its root key is missing (Lago: 400)."""

    def __init__(self, details: dict[str, Any], message: str | None = None):
        super().__init__(message or "malformed input")
        self.details = details
        self.message = message


class NotFound(DomainError):
    """A referenced object does not exist; `resource` names its kind ("customer", "plan")."""

    def __init__(self, resource: str):
        super().__init__(f"{resource} not found")
        self.resource = resource


class Unauthenticated(DomainError):
    """No valid credential. Says nothing more, so a key scanner learns nothing."""


class Forbidden(DomainError):
    """A valid credential for something else: a portal link used for another customer than
    the one it was issued for (Lago: 403 forbidden)."""


class Unavailable(DomainError):
    """Our side failed (a publish not confirmed, a store contended); the caller retries."""


class Unbillable(DomainError):
    """One subscription's own usage or catalog cannot be billed (Lago: 422, `reason` as the
    code). A billing run flags that subscription with `reason` and bills the others; its
    current usage and portal answer 422, and every other customer's keep working."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
