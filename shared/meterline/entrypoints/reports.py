"""`GET /api/v1/reports/{name}?month=YYYY-MM`: a finance report (`core.reports`) run on the
warehouse, answered as `{"report", "month", "rows"}` (rows typed by the report's columns:
cents as integers beside a `currency` column).

Meterline's own, and local only (`meterline.routes`: not public): it is how `meterline report`
asks a `meterline serve` that holds the data dir's warehouse. The bill function's runtime
serves it, the one that holds the warehouse there. On Google Cloud finance queries the
`report_<name>` views in BigQuery instead.
"""

from __future__ import annotations

from flask import Request, Response

from meterline.core import reports
from meterline.core.errors import ValidationFailed
from meterline.entrypoints import lago
from meterline.entrypoints.http import json_response, method_not_allowed

PATH = "/api/v1/reports/"


def report_handler(runtime, request: Request) -> Response:
    """`runtime` has `reports` (a ReportReader); the caller has authenticated the request."""
    if request.method != "GET":
        raise method_not_allowed(("GET", "HEAD"))
    spec = reports.get(request.path[len(PATH):])
    month = None
    if spec.monthly:
        raw = request.args.get("month")
        if raw is None:
            raise ValidationFailed({"month": ["value_is_mandatory"]}, f"the {spec.name} report is monthly: give a month")
        month = reports.parse_month(raw)
    rows = runtime.reports.report(spec.name, month)
    return json_response(200, lago.report(spec.name, month.label if month else None, rows))
