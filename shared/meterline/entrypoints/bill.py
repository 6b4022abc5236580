"""The `bill` entry point: Cloud Scheduler (or `meterline bill`) starts a billing run.

On Google Cloud the function is private: Cloud Run admits only callers with `run.invoker`,
which Terraform grants to the scheduler's service account alone, and the scheduler proves
who it is with an OIDC token whose audience is the function's URL. In `meterline serve` the
same handler sits behind an API key. Runs are idempotent, so the scheduler's retries and two
overlapping runs are harmless.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Request, Response

from meterline.core.errors import ValidationFailed
from meterline.core.jsonbody import read_json
from meterline.entrypoints.http import json_response, method_not_allowed, read_body


def as_of_from(body: bytes) -> datetime:
    """`{"as_of": ISO-8601}` (optional): the instant the run bills up to; now by default."""
    data = read_json(body) if body.strip() else {}
    raw = data.get("as_of") if isinstance(data, dict) else None
    if raw is None:
        return datetime.now(timezone.utc)
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed({"as_of": ["invalid_format"]}) from None
    if value.tzinfo is None:
        raise ValidationFailed({"as_of": ["invalid_format"]})
    return value.astimezone(timezone.utc)


def bill_handler(runtime, request: Request, authenticate: bool = False) -> Response:
    """`runtime` has `billing` (a BillingService), `settings` and, when `authenticate`, `auth`."""
    if authenticate:
        runtime.auth.authenticate(request.headers.get("Authorization"))
    if request.method != "POST":
        raise method_not_allowed()
    as_of = as_of_from(read_body(request, 4096))
    result = runtime.billing.run(as_of)
    # 200 even when some subscriptions failed: they are logged and retried by the next run, and
    # a 5xx would make the scheduler repeat the whole run at once for the others' sake.
    return json_response(200, {"billing_run": result.summary()})
