"""The `bill` entry point: Cloud Scheduler (or `meterline bill`) starts a billing run.

On Google Cloud the function is private: Cloud Run admits only callers with `run.invoker`,
which Terraform grants to the scheduler's service account alone, and the scheduler proves
who it is with an OIDC token whose audience is the function's URL. In `meterline serve` the
same handler sits behind an API key. Runs are idempotent, so the scheduler's retries and two
overlapping runs are harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Request, Response

from meterline.core.errors import ValidationFailed
from meterline.core.jsonbody import read_json
from meterline.entrypoints.http import json_response, method_not_allowed, read_body
from meterline.entrypoints.reports import PATH as REPORTS_PATH
from meterline.entrypoints.reports import report_handler

# A run bills the periods that ended by `as_of`; the calendar arithmetic of a period near year
# 9999 overflows, and an instant before 1970 is before any event's epoch timestamp.
AS_OF_RANGE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC))


def check_as_of(value: datetime) -> datetime:
    """`value` in UTC, or 422 `value_is_out_of_range` outside `AS_OF_RANGE`."""
    value = value.astimezone(UTC)
    if not AS_OF_RANGE[0] <= value < AS_OF_RANGE[1]:
        raise ValidationFailed({"as_of": ["value_is_out_of_range"]})
    return value


def as_of_from(body: bytes) -> datetime:
    """`{"as_of": ISO-8601}` (optional): the instant the run bills up to; now by default."""
    data = read_json(body) if body.strip() else {}
    raw = data.get("as_of") if isinstance(data, dict) else None
    if raw is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed({"as_of": ["invalid_format"]}) from None
    if value.tzinfo is None:
        raise ValidationFailed({"as_of": ["invalid_format"]})
    try:
        return check_as_of(value)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past the last UTC datetime
        raise ValidationFailed({"as_of": ["value_is_out_of_range"]}) from None


def bill_handler(runtime, request: Request, authenticate: bool = False) -> Response:
    """`runtime` has `billing` (a BillingService), `reports`, `settings` and, when
    `authenticate`, `auth`. The bill function also answers the finance reports
    (`entrypoints.reports`): it holds the warehouse in `meterline serve`."""
    if authenticate:
        runtime.auth.authenticate(request.headers.get("Authorization"))
    if request.path.startswith(REPORTS_PATH):
        return report_handler(runtime, request)
    if request.method != "POST":
        raise method_not_allowed()
    as_of = as_of_from(read_body(request, 4096))
    result = runtime.billing.run(as_of)
    # 200 even when some subscriptions failed: they are logged and retried by the next run, and
    # a 5xx would make the scheduler repeat the whole run at once for the others' sake.
    return json_response(200, {"billing_run": result.summary()})
