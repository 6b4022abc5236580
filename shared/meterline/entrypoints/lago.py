"""Lago's wire format: every response body and error body the HTTP entry points answer.

A handler asks this module to render what a service returned (`lago.plan(plan)`,
`lago.invoice(details)`, `lago.error(err)`); it never builds one of Lago's dicts itself. The
shapes are those Lago's official clients parse (tests/compat runs `lago-python-client` on
them): Lago's field names, its ids (`core.catalog.lago_id`, derived, so the same on every
backend), its timestamp texts, and the neutral value of every option Meterline has not.

The catalog models' own `to_lago()` is their definition as a client sends it; the answers
here add what only an answer has (lago_id, timestamps, Lago's neutral values).

Only `core.errors` is imported up front: the ingest function renders events and errors alone,
and its cold start should not pay for the catalog's models (`_lago_id`, `_stamp`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from meterline.core.clock import iso_exact, iso_ms, iso_seconds
from meterline.core.errors import (
    DomainError,
    Forbidden,
    MalformedInput,
    NotFound,
    Unauthenticated,
    Unavailable,
    Unbillable,
    ValidationFailed,
)
from meterline.core.money import currency_exponent

if TYPE_CHECKING:
    from meterline.core.catalog import BillableMetric, Charge, ChargeFilter, Customer, Plan
    from meterline.core.events import Event
    from meterline.core.invoices import InvoiceLine
    from meterline.core.subscriptions import SubscriptionView
    from meterline.services.invoices import InvoiceDetails
    from meterline.services.portal import CurrentUsage

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

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


def _error_body(status: int, error: str, code: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": error, "code": code}
    if details is not None:
        body["error_details"] = details
    return body


def error(err: DomainError | HttpError) -> tuple[int, dict[str, Any]]:
    """A domain error as Lago answers it: (status, body). The one mapping of domain errors."""
    if isinstance(err, HttpError):
        return err.status, _error_body(err.status, err.error, err.code, err.details)
    if isinstance(err, ValidationFailed):
        return 422, _error_body(422, err.message or "Unprocessable Entity", "validation_errors", err.details)
    if isinstance(err, MalformedInput):
        return 400, _error_body(400, err.message or "Bad Request", "bad_request", err.details)
    if isinstance(err, NotFound):
        return 404, _error_body(404, "Not Found", f"{err.resource}_not_found")
    if isinstance(err, Unauthenticated):
        # NOTE: exactly Lago's body; it never says why, so a key scanner learns nothing.
        return 401, {"status": 401, "error": "Unauthorized"}
    if isinstance(err, Forbidden):
        return 403, _error_body(403, "Forbidden", "forbidden")
    if isinstance(err, Unavailable):
        return error(http_error(503))
    if isinstance(err, Unbillable):
        # One subscription's own usage or catalog (e.g. amount_out_of_range): a 4xx that names
        # why, never a 5xx a client would retry.
        return 422, _error_body(422, "Unprocessable Entity", err.reason)
    raise TypeError(f"no HTTP mapping for {type(err).__name__}")  # a new DomainError needs one here


# ---------------------------------------------------------------------------------------------
# Lists, ids, times
# ---------------------------------------------------------------------------------------------


def meta(page: int, per_page: int, total: int) -> dict[str, Any]:
    """Lago's pagination `meta` of a list answer."""
    pages = max(1, math.ceil(total / per_page)) if total else 0
    return {
        "current_page": page,
        "next_page": page + 1 if page < pages else None,
        "prev_page": page - 1 if page > 1 else None,
        "total_pages": pages,
        "total_count": total,
    }


def listing(key: str, items: list[dict[str, Any]], page: int, per_page: int, total: int) -> dict[str, Any]:
    """A list answer: {"plans": [...], "meta": {...}}."""
    return {key: items, "meta": meta(page, per_page, total)}


def _lago_id(kind: str, *key: str) -> str:
    from meterline.core.catalog import lago_id  # lazily: see the module doc

    return lago_id(kind, *key)


def _stamp(value: datetime | None) -> str:
    """A catalog object's stored timestamp; a fixed "unknown" for one stored before them."""
    from meterline.core.catalog import UNKNOWN_TIME  # lazily: see the module doc

    return UNKNOWN_TIME if value is None else iso_ms(value)


def _decimal(value: Decimal) -> str:
    return format(value.normalize(), "f")


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def event(e: Event) -> dict[str, Any]:
    # The event's own renderer stays beside it: it runs twice per event on ingest's hot path
    # and is tuned there (`core.events.iso_ms`).
    return e.to_lago()


def events(items: Sequence[Event]) -> list[dict[str, Any]]:
    return [e.to_lago() for e in items]


# ---------------------------------------------------------------------------------------------
# The catalog
# ---------------------------------------------------------------------------------------------


def billable_metric(metric: BillableMetric) -> dict[str, Any]:
    return {
        "lago_id": metric.lago_id,
        **metric.to_lago(),
        "expression": None,
        "created_at": _stamp(metric.created_at),
    }


def charge(c: Charge, plan_code: str, created_at: str) -> dict[str, Any]:
    """Lago's charge object; `created_at` is its plan's (Meterline keeps one per plan)."""
    body = c.to_lago()
    del body["billable_metric_id"]  # a request field: the answer says lago_billable_metric_id
    return {
        "lago_id": _lago_id("charge", plan_code, c.ref),
        "lago_billable_metric_id": _lago_id("billable_metric", c.billable_metric_code or ""),
        **body,
        "created_at": created_at,
        "regroup_paid_fees": None,
        "accepts_target_wallet": False,
        "applied_pricing_unit": None,
        "taxes": [],
    }


def plan(p: Plan) -> dict[str, Any]:
    """Lago's plan object. active_subscriptions_count and draft_invoices_count are left out:
    counting them would read every subscription on each answer."""
    created = _stamp(p.created_at)
    return {
        "lago_id": p.lago_id,
        **p.to_lago(),
        "charges": [charge(c, p.code, created) for c in p.charges],
        "created_at": created,
        "bill_charges_monthly": None,
        "bill_fixed_charges_monthly": None,
        "fixed_charges": [],
        "minimum_commitment": None,
        "usage_thresholds": [],
        "taxes": [],
        "metadata": None,
    }


def customer(c: Customer) -> dict[str, Any]:
    """Lago's customer object, with Lago's neutral values for what Meterline has not."""
    created = _stamp(c.created_at)
    body = c.to_lago()
    body["metadata"] = [
        {"lago_id": _lago_id("customer_metadata", c.external_id, m["key"]), **m, "created_at": created}
        for m in body["metadata"]
    ]
    return {
        "lago_id": c.lago_id,
        **body,
        "created_at": created,
        "updated_at": _stamp(c.updated_at),
        # Lago: the customer's timezone, else the organization's; Meterline's default is UTC.
        "applicable_timezone": c.timezone,
        "logo_url": None,
        "shipping_address": None,
        "finalize_zero_amount_invoice": "inherit",
        "integration_customers": [],
        "taxes": [],
        "skip_invoice_custom_sections": False,
        "applicable_invoice_custom_sections": [],
        "billing_entity_code": None,
    }


def subscription(view: SubscriptionView) -> dict[str, Any]:
    """Lago's subscription object for one record (`core.subscriptions.subscription_view`).
    Lago's options that Meterline has not (payment methods, invoice sections, activation
    rules) answer their neutral values."""
    record, p, period = view.record, view.plan, view.period
    body = record.to_lago()
    if body["created_at"] is None:
        body["created_at"] = _stamp(None)
    return {
        **body,
        "lago_customer_id": _lago_id("customer", record.external_customer_id),
        "plan_amount_cents": p.amount_cents if p is not None else None,
        "plan_amount_currency": p.amount_currency if p is not None else None,
        "subscription_date": record.subscription_at.date().isoformat(),
        "trial_ended_at": None,
        "current_billing_period_started_at": iso_seconds(period.start_utc) if period else None,
        "current_billing_period_ending_at": iso_seconds(period.lago_to_datetime) if period else None,
        "on_termination_credit_note": None,
        "on_termination_invoice": None,
        "payment_method": None,
        "applied_invoice_custom_sections": [],
        "consolidate_invoice": None,
        "billing_entity_code": None,
        "purchase_order_number": None,
        "cancellation_reason": None,
        "activated_at": None,
        "activation_rules": [],
    }


# ---------------------------------------------------------------------------------------------
# Invoices and fees
# ---------------------------------------------------------------------------------------------

# Our states as Lago's (status, payment_status): Lago keeps paid and failed invoices
# "finalized" and says how the payment went in payment_status.
_INVOICE_STATUS = {
    "draft": ("draft", "pending"),
    "finalized": ("finalized", "pending"),
    "paid": ("finalized", "succeeded"),
    "payment_failed": ("finalized", "failed"),
    "voided": ("voided", "pending"),
}
# Lago's status filter -> ours.
_INVOICE_FILTER = {"draft": ["draft"], "finalized": ["finalized", "paid", "payment_failed"], "voided": ["voided"]}
INVOICE_PAYMENT_STATUSES = ("pending", "succeeded", "failed")


def invoice_statuses(status: str | None, payment_status: str | None, ours: Sequence[str]) -> list[str] | None:
    """Lago's invoice list filters (status, payment_status; checked by the caller) as our
    statuses (`ours`: every one); None: no filter. A status of ours is taken as it is."""
    statuses = _INVOICE_FILTER.get(status, [status]) if status else None
    if payment_status:
        by_payment = [s for s in ours if s != "voided" and _INVOICE_STATUS[s][1] == payment_status]
        statuses = [s for s in (statuses or by_payment) if s in by_payment]
    return statuses


def is_invoice_status_filter(status: str) -> bool:
    """Whether `status` is one of Lago's invoice status filters."""
    return status in _INVOICE_FILTER


def _precise_cents(line: InvoiceLine, exponent: int) -> str:
    return _decimal(line.precise_amount.scaleb(exponent))


def _charge_filter_id(plan_code: str, charge_ref: str, key: str) -> str:
    # NOTE: GET /plans answers no lago_id for a charge filter yet; this derivation (a filter is
    # named by its plan, its charge and its canonical key, as invoice lines name it) is the
    # one to give there too, so that the two agree. See docs/lago-compatibility.md.
    return _lago_id("charge_filter", plan_code, charge_ref, key)


def _filter_display_name(charge_filter: ChargeFilter) -> str:
    """Lago's: the filter's invoice_display_name, else its values."""
    return charge_filter.invoice_display_name or ", ".join(v for key in sorted(charge_filter.values)
                                                           for v in charge_filter.values[key])


def _period_end(end: datetime, record_end: datetime | None) -> str:
    """Lago's inclusive end: the last second of a period, or the instant the record ended."""
    return iso_seconds(end if end == record_end else end - timedelta(seconds=1))


def billing_period(details: InvoiceDetails, view: SubscriptionView) -> dict[str, Any]:
    """Lago's billing period of one record on the invoice. The charges are for the record's
    part of the invoice's period; so is the base fee, except a plan paid in advance's, which
    pays for the following period (its line says which)."""
    invoice, record = details.invoice, view.record
    start = max(record.start, invoice.from_utc)
    end = invoice.to_utc if record.end is None else min(record.end, invoice.to_utc)
    base_from, base_to = next(((line.from_datetime, line.to_datetime) for line in invoice.lines
                               if line.kind == "subscription" and line.from_datetime is not None
                               and line.to_datetime is not None and details.record_of(line) is record),
                              (start, end))
    ends_here = record.end is not None and invoice.from_utc < record.end <= invoice.to_utc
    return {
        "lago_subscription_id": record.lago_id,
        "external_subscription_id": record.external_id,
        "lago_plan_id": _lago_id("plan", record.plan_code),
        "subscription_from_datetime": iso_seconds(base_from),
        "subscription_to_datetime": _period_end(base_to, record.end),
        "charges_from_datetime": iso_seconds(start),
        "charges_to_datetime": _period_end(end, record.end),
        # A starting invoice (a plan paid in advance: its first period's base fee) is Lago's
        # subscription_starting; every other is made once its period has ended (the last one
        # at the termination): Lago's periodic invoice, or its terminating one.
        "invoicing_reason": "subscription_starting" if invoice.kind == "starting"
        else "subscription_terminating" if ends_here else "subscription_periodic",
    }


def _fee_item(details: InvoiceDetails, line: InvoiceLine) -> dict[str, Any]:
    """Lago's fee item: the plan for the base fee, else the billable metric the charge is on.
    What the catalog no longer has is null, or the line's own description for the names."""
    if line.kind == "subscription":
        p = details.plans.get(line.plan_code) if line.plan_code else None
        record = details.record_of(line)
        kind, code, item_type = "subscription", line.plan_code, "Subscription"
        item_id = record.lago_id if record is not None else None
        name = p.name if p is not None else None
        display = (p.invoice_display_name or p.name) if p is not None else None
        charge_filter = None
    else:  # a charge's fee, its true-up (Lago's is a charge fee too) or its late usage
        c = details.charges.get(line.ref)
        code = c.billable_metric_code if c is not None else None
        metric = details.metrics.get(code) if code else None
        kind, item_type = "charge", "BillableMetric"
        item_id = _lago_id("billable_metric", code) if code else None  # as a charge's lago_billable_metric_id
        name = metric.name if metric is not None else code
        display = (c.invoice_display_name if c is not None else None) or name
        charge_filter = next((f for f in c.filters if f.key == line.filter_key), None) \
            if c is not None and line.filter_key else None
    return {
        "type": kind,
        "code": code,
        "name": name or line.description,
        "invoice_display_name": display or line.description,
        "filter_invoice_display_name": _filter_display_name(charge_filter) if charge_filter else line.filter_key,
        "filters": {k: list(v) for k, v in charge_filter.values.items()} if charge_filter else None,
        "lago_item_id": item_id,
        "item_type": item_type,
        "grouped_by": None,
    }


def fee(details: InvoiceDetails, line: InvoiceLine) -> dict[str, Any]:
    """One invoice line as Lago's fee."""
    invoice = details.invoice
    charge_id = filter_id = None
    if line.kind != "subscription" and line.plan_code is not None and line.charge_ref is not None:
        # Derived as GET /plans derives it, so it holds for a charge the plan has dropped since.
        charge_id = _lago_id("charge", line.plan_code, line.charge_ref)
        if line.filter_key:
            filter_id = _charge_filter_id(line.plan_code, line.charge_ref, line.filter_key)
    return {
        "lago_id": f"{invoice.id}:{line.ref}",
        "lago_charge_id": charge_id,
        "lago_charge_filter_id": filter_id,
        "lago_invoice_id": invoice.id,
        "lago_true_up_fee_id": None,
        "lago_true_up_parent_fee_id": None,
        "external_subscription_id": invoice.subscription_external_id,
        "lago_customer_id": _lago_id("customer", invoice.customer_external_id),
        "external_customer_id": invoice.customer_external_id,
        "amount_cents": line.amount_cents,
        "amount_currency": invoice.currency,
        "precise_amount": _decimal(line.precise_amount),
        "precise_amount_cents": _precise_cents(line, currency_exponent(invoice.currency)),
        "taxes_amount_cents": 0,
        "taxes_rate": 0.0,
        "total_amount_cents": line.amount_cents,
        "total_amount_currency": invoice.currency,
        "units": _decimal(line.units),
        "events_count": line.events_count,
        "description": line.description,
        "pay_in_advance": False,
        "invoiceable": True,
        "from_date": iso_exact(line.from_datetime),
        "to_date": iso_exact(line.to_datetime),
        "payment_status": invoice.payment_status,
        "created_at": iso_exact(invoice.created_at),
        "item": _fee_item(details, line),
    }


def invoice(details: InvoiceDetails) -> dict[str, Any]:
    """Lago's invoice object, with its customer, subscriptions, billing periods and fees."""
    inv = details.invoice
    status, payment = _INVOICE_STATUS[inv.status]
    total = inv.amount_cents
    paid = total if inv.status == "paid" else 0
    return {
        "lago_id": inv.id,
        "sequential_id": inv.sequential_id,
        # Lago's drafts carry a number too; ours is given at finalization, so a draft shows
        # the placeholder Lago's own drafts end with.
        "number": inv.number or "DRAFT",
        "issuing_date": inv.issuing_date.isoformat(),
        "payment_due_date": inv.issuing_date.isoformat(),
        "payment_overdue": False,
        "net_payment_term": inv.days_until_due or 0,
        "invoice_type": "subscription",
        "version_number": 4,
        "status": status,
        "payment_status": payment,
        "currency": inv.currency,
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
        "voided_at": iso_exact(inv.updated_at) if inv.status == "voided" else None,
        "created_at": iso_exact(inv.created_at),
        "updated_at": iso_exact(inv.updated_at),
        "file_url": inv.hosted_invoice_url,
        "external_customer_id": inv.customer_external_id,
        # A customer deleted since is null (the client allows it); its subscriptions still
        # render, without a current period.
        "customer": customer(details.customer) if details.customer is not None else None,
        "subscriptions": [subscription(v) for v in details.subscriptions],
        "billing_periods": [billing_period(details, v) for v in details.subscriptions],
        "fees": [fee(details, line) for line in inv.lines],
        "metadata": [],
        "applied_taxes": [],
    }


# ---------------------------------------------------------------------------------------------
# Current usage, portal links
# ---------------------------------------------------------------------------------------------


def current_usage(usage: CurrentUsage) -> dict[str, Any]:
    """Lago's customer_usage: one entry per charge, its filters' fees below it. Like Lago's,
    the amounts are the usage-based fees only (the subscription fee is billed beside them)."""
    currency, period = usage.currency, usage.period
    by_charge: dict[tuple[str, str], list] = {}
    for f in usage.charge_fees:
        by_charge.setdefault((f.ref.plan_code or "", f.ref.charge_ref or ""), []).append(f)
    plans = {r.plan.code: r.plan for r in usage.rated}
    charges = []
    for (plan_code, ref), fees in by_charge.items():
        c = next(c for c in plans[plan_code].charges if c.ref == ref)
        metric = usage.metrics[c.billable_metric_code or ""]
        filters = {f.key: f for f in c.filters}
        units = sum((f.units for f in fees), Decimal(0))
        charges.append({
            "units": _decimal(units),
            "total_aggregated_units": _decimal(units),
            "events_count": sum(f.events_count or 0 for f in fees),
            "amount_cents": sum(f.amount_cents for f in fees),
            "amount_currency": currency,
            "pricing_unit_details": None,
            "presentation_breakdowns": None,
            "charge": {
                "lago_id": _lago_id("charge", plan_code, ref),
                "charge_model": c.charge_model,
                "invoice_display_name": c.invoice_display_name,
            },
            "billable_metric": {
                "lago_id": metric.lago_id,
                "name": metric.name,
                "code": metric.code,
                "aggregation_type": f"{metric.aggregation_type}_agg",
            },
            # Lago lists each filter's fee; the events matching none have `values: null`.
            "filters": [
                {
                    "invoice_display_name": filters[f.ref.filter_key].invoice_display_name if f.ref.filter_key else None,
                    "values": {k: list(v) for k, v in filters[f.ref.filter_key].values.items()} if f.ref.filter_key else None,
                    "units": _decimal(f.units),
                    "total_aggregated_units": _decimal(f.units),
                    "amount_cents": f.amount_cents,
                    "events_count": f.events_count or 0,
                    "pricing_unit_details": None,
                    "presentation_breakdowns": None,
                }
                for f in fees
            ] if c.filters else [],
            "grouped_usage": [],
        })
    amount = sum(c["amount_cents"] for c in charges)
    # Lago's boundaries of current usage are the charges' (charges_from/to_datetime): from the
    # subscription's start, if it started in this period, to its end if it ends in it.
    start, end = usage.window
    return {
        "from_datetime": iso_exact(start),
        "to_datetime": iso_exact(period.lago_to_datetime if end == period.end_utc else end),
        # The day the invoice of this period would be issued (the billing run's rule).
        "issuing_date": (period.end_date + timedelta(days=1)).isoformat(),
        "lago_invoice_id": None,
        "currency": currency,
        "amount_cents": amount,
        "taxes_amount_cents": 0,
        "total_amount_cents": amount,
        "charges_usage": charges,
    }


def checkout_url(customer, url: str) -> dict[str, Any]:
    """Lago's answer to POST /customers/{id}/checkout_url (its CustomerCheckoutSerializer)."""
    config = customer.billing_configuration or {}
    return {"customer": {
        "lago_customer_id": customer.lago_id,
        "external_customer_id": customer.external_id,
        "payment_provider": "stripe",
        "payment_provider_code": config.get("payment_provider_code"),
        "checkout_url": url,
    }}


def portal_url(url: str) -> dict[str, Any]:
    """Lago's answer to GET /customers/{id}/portal_url."""
    return {"customer": {"portal_url": url}}


# ---------------------------------------------------------------------------------------------
# Finance reports (Meterline's own: `GET /api/v1/reports/{name}`)
# ---------------------------------------------------------------------------------------------


def _report_value(value: Any) -> Any:
    """A typed report value as JSON: cents stay integers; exact decimals are decimal strings (as
    Lago writes units), dates ISO, timestamps UTC with Z; `core.reports.typed_rows` reads each
    back."""
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime):
        return iso_exact(value)
    if hasattr(value, "isoformat"):  # a date
        return value.isoformat()
    return value


def report(name: str, month: str | None, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`month` is `YYYY-MM`, or None for a report that is not monthly; rows keep the report's
    column order."""
    return {"report": name, "month": month,
            "rows": [{column: _report_value(value) for column, value in row.items()} for row in rows]}
