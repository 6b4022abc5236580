"""Lago's invoices API over HTTP (read-only): GET /api/v1/invoices and /invoices/{lago_id}.

Invoices are made by the billing run (`services/billing.py`); this only shows them, in
Lago's invoice shape, so that Lago's own client parses them.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Request, Response

from meterline.core.errors import NotFound, ValidationFailed
from meterline.core.invoices import INVOICE_STATUSES, Invoice, InvoiceLine
from meterline.core.money import currency_exponent
from meterline.entrypoints.http import (
    api_path,
    json_response,
    method_not_allowed,
    page_args,
    pagination_meta,
    route_not_found,
)

# Our states as Lago's (status, payment_status): Lago keeps paid and failed invoices
# "finalized" and says how the payment went in payment_status.
_LAGO_STATUS = {
    "draft": ("draft", "pending"),
    "finalized": ("finalized", "pending"),
    "paid": ("finalized", "succeeded"),
    "payment_failed": ("finalized", "failed"),
    "voided": ("voided", "pending"),
}
# Lago's status filter -> ours.
_FILTER = {"draft": ["draft"], "finalized": ["finalized", "paid", "payment_failed"], "voided": ["voided"]}


def _iso(value) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _precise_cents(line: InvoiceLine, currency: str) -> str:
    return format(line.precise_amount.scaleb(currency_exponent(currency)).normalize(), "f")


def fee_to_lago(invoice: Invoice, line: InvoiceLine) -> dict[str, Any]:
    return {
        "lago_id": f"{invoice.id}:{line.ref}",
        "lago_charge_id": None,
        "lago_charge_filter_id": None,
        "lago_invoice_id": invoice.id,
        "lago_true_up_fee_id": None,
        "lago_true_up_parent_fee_id": None,
        "external_subscription_id": invoice.subscription_external_id,
        "external_customer_id": invoice.customer_external_id,
        "amount_cents": line.amount_cents,
        "amount_currency": invoice.currency,
        "precise_amount": format(line.precise_amount.normalize(), "f"),
        "precise_amount_cents": _precise_cents(line, invoice.currency),
        "taxes_amount_cents": 0,
        "taxes_rate": 0.0,
        "total_amount_cents": line.amount_cents,
        "total_amount_currency": invoice.currency,
        "units": format(line.units.normalize(), "f"),
        "events_count": line.events_count,
        "description": line.description,
        "pay_in_advance": False,
        "invoiceable": True,
        "from_date": _iso(line.from_datetime),
        "to_date": _iso(line.to_datetime),
        "payment_status": invoice.payment_status,
        "created_at": _iso(invoice.created_at),
        "item": {
            "type": {"subscription": "subscription", "true_up": "charge", "late_usage": "charge"}.get(line.kind, line.kind),
            "code": line.charge_ref or line.plan_code or line.kind,
            "name": line.description,
            "invoice_display_name": line.description,
            "filter_invoice_display_name": line.filter_key,
            "lago_item_id": line.ref,
            "item_type": line.kind,
        },
    }


def invoice_to_lago(invoice: Invoice) -> dict[str, Any]:
    status, payment = _LAGO_STATUS[invoice.status]
    total = invoice.amount_cents
    paid = total if invoice.status == "paid" else 0
    return {
        "lago_id": invoice.id,
        "sequential_id": invoice.sequential_id,
        # Lago's drafts carry a number too; ours is given at finalization, so a draft shows
        # the placeholder Lago's own drafts end with.
        "number": invoice.number or "DRAFT",
        "issuing_date": invoice.issuing_date.isoformat(),
        "payment_due_date": invoice.issuing_date.isoformat(),
        "payment_overdue": False,
        "net_payment_term": invoice.days_until_due or 0,
        "invoice_type": "subscription",
        "version_number": 4,
        "status": status,
        "payment_status": payment,
        "currency": invoice.currency,
        "fees_amount_cents": total,
        "coupons_amount_cents": 0,
        "taxes_amount_cents": 0,
        "credit_notes_amount_cents": 0,
        "progressive_billing_credit_amount_cents": 0,
        "sub_total_excluding_taxes_amount_cents": total,
        "sub_total_including_taxes_amount_cents": total,
        "total_amount_cents": total,
        "total_due_amount_cents": total - paid,
        "total_paid_amount_cents": paid,
        "prepaid_credit_amount_cents": 0,
        "voided_at": _iso(invoice.updated_at) if invoice.status == "voided" else None,
        "created_at": _iso(invoice.created_at),
        "updated_at": _iso(invoice.updated_at),
        "file_url": invoice.hosted_invoice_url,
        "external_customer_id": invoice.customer_external_id,
        "fees": [fee_to_lago(invoice, line) for line in invoice.lines],
        "metadata": [],
        "applied_taxes": [],
    }


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
    """`runtime` has `auth` and `invoices` (an InvoiceStore): the admin function's."""
    resource, _, key = api_path(request).partition("/")
    if resource != "invoices" or "/" in key:
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    if request.method not in ("GET", "HEAD"):
        raise method_not_allowed()
    store = runtime.invoices
    if key:
        invoice = store.get(key)
        if invoice is None:
            raise NotFound("invoice")
        return json_response(200, {"invoice": invoice_to_lago(invoice)})
    page, per_page = page_args(request)
    errors: dict[str, list[str]] = {}
    status = request.args.get("status")
    if status and status not in _FILTER and status not in INVOICE_STATUSES:
        errors["status"] = ["invalid_value"]
    payment = request.args.get("payment_status")
    if payment and payment not in ("pending", "succeeded", "failed"):
        errors["payment_status"] = ["invalid_value"]
    date_from = _date_arg(request, "issuing_date_from", errors)
    date_to = _date_arg(request, "issuing_date_to", errors)
    if errors:
        raise ValidationFailed(errors)
    statuses = _FILTER.get(status, [status]) if status else None
    if payment:
        by_payment = [s for s in INVOICE_STATUSES if s != "voided" and _LAGO_STATUS[s][1] == payment]
        statuses = [s for s in (statuses or by_payment) if s in by_payment]
    items, total = store.list(
        customer_external_id=request.args.get("external_customer_id") or None,
        statuses=statuses, issuing_date_from=date_from, issuing_date_to=date_to,
        offset=(page - 1) * per_page, limit=per_page,
    )
    return json_response(200, {"invoices": [invoice_to_lago(i) for i in items], "meta": pagination_meta(page, per_page, total)})
