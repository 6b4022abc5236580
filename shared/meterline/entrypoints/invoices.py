"""Lago's invoices API over HTTP (read-only): GET /api/v1/invoices and /invoices/{lago_id}.

Invoices are made by the billing run (`services/billing.py`); the invoices service
(`services/invoices.py`) reads them with what the catalog now says of them, and
`meterline.entrypoints.lago` renders them in Lago's invoice shape, so that Lago's own client
parses them.
"""

from __future__ import annotations

from datetime import date

from flask import Request, Response

from meterline.core.errors import ValidationFailed
from meterline.core.invoices import INVOICE_STATUSES
from meterline.entrypoints import lago
from meterline.entrypoints.http import api_path, json_response, method_not_allowed, page_args, route_not_found


def _date_arg(request: Request, name: str, errors: dict[str, list[str]]) -> date | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = ["invalid_date"]
        return None


def invoices_handler(runtime, request: Request) -> Response:
    """`runtime` has `auth` and `invoices` (an InvoicesService): the admin function's."""
    resource, _, key = api_path(request).partition("/")
    if resource != "invoices" or "/" in key:
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    if request.method not in ("GET", "HEAD"):
        raise method_not_allowed()
    service = runtime.invoices
    if key:
        return json_response(200, {"invoice": lago.invoice(service.get(key))})
    page, per_page = page_args(request)
    errors: dict[str, list[str]] = {}
    status = request.args.get("status")
    if status and not lago.is_invoice_status_filter(status) and status not in INVOICE_STATUSES:
        errors["status"] = ["invalid_value"]
    payment = request.args.get("payment_status")
    if payment and payment not in lago.INVOICE_PAYMENT_STATUSES:
        errors["payment_status"] = ["invalid_value"]
    date_from = _date_arg(request, "issuing_date_from", errors)
    date_to = _date_arg(request, "issuing_date_to", errors)
    if errors:
        raise ValidationFailed(errors)
    items, total = service.list_page(
        customer_external_id=request.args.get("external_customer_id") or None,
        statuses=lago.invoice_statuses(status, payment, INVOICE_STATUSES),
        issuing_date_from=date_from, issuing_date_to=date_to, page=page, per_page=per_page,
    )
    return json_response(200, lago.listing("invoices", [lago.invoice(i) for i in items], page, per_page, total))
