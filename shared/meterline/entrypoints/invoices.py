"""Lago's invoices API over HTTP (read-only): GET /api/v1/invoices and /invoices/{lago_id}.

Invoices are made by the billing run (`services/billing.py`); this only shows them, in
Lago's invoice shape, so that Lago's own client parses them. An invoice stores its lines
with the plan, charge and filter they came from (`core.invoices.InvoiceLine`); the customer,
subscriptions, billing periods and each fee's charge and metric are read from the catalog as
it is now, through `CatalogReads`, so one answer reads each object once however many fees
name it. The ids are derived (`core.catalog.lago_id`), so a charge's id here is the one
GET /plans answers, even for a charge the plan has dropped since.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from flask import Request, Response

from meterline.core.catalog import BillableMetric, Charge, ChargeFilter, Customer, Plan, Subscription, lago_id
from meterline.core.clock import iso_exact, iso_seconds
from meterline.core.errors import NotFound, ValidationFailed
from meterline.core.invoices import INVOICE_STATUSES, Invoice, InvoiceLine
from meterline.core.money import currency_exponent
from meterline.core.subscriptions import subscription_to_lago, with_lago_ids
from meterline.entrypoints.http import (
    api_path,
    json_response,
    method_not_allowed,
    page_args,
    pagination_meta,
    route_not_found,
)
from meterline.ports import CatalogStore

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
# The records a billing run bills (core: a pending record has not started, a canceled one never did).
_BILLED = ("active", "terminated")

K = TypeVar("K")
V = TypeVar("V")


class CatalogReads:
    """The catalog reads of one answer, each made at most once: the invoices of a page share
    their customers, plans and metrics, and every fee of an invoice names the same few. What
    was deleted since reads as None, and the invoice is rendered without it."""

    def __init__(self, store: CatalogStore):
        self._store = store
        self._customers: dict[str, Customer | None] = {}
        self._plans: dict[str, Plan | None] = {}
        self._metrics: dict[str, BillableMetric | None] = {}
        self._records: dict[str, list[Subscription]] = {}
        self._charges: dict[str, dict[str, Charge]] = {}

    @staticmethod
    def _once(cache: dict[K, V], key: K, read: Callable[[K], V]) -> V:
        if key not in cache:
            cache[key] = read(key)
        return cache[key]

    def customer(self, external_id: str) -> Customer | None:
        return self._once(self._customers, external_id, self._store.get_customer)

    def plan(self, code: str) -> Plan | None:
        return self._once(self._plans, code, self._store.get_plan)

    def metric(self, code: str) -> BillableMetric | None:
        return self._once(self._metrics, code, self._store.get_billable_metric)

    def records(self, external_id: str) -> list[Subscription]:
        """Every record of the subscription, oldest first, each with its lago_id."""
        return self._once(self._records, external_id,
                          lambda key: with_lago_ids(self._store.get_subscription_history(key).records))

    def charge(self, plan_code: str, ref: str) -> Charge | None:
        """The plan's charge `ref` as the plan is now (None: the plan or the charge is gone)."""
        def by_ref(code: str) -> dict[str, Charge]:
            plan = self.plan(code)
            return {c.ref: c for c in plan.charges} if plan is not None else {}
        return self._once(self._charges, plan_code, by_ref).get(ref)


def _precise_cents(line: InvoiceLine, currency: str) -> str:
    return format(line.precise_amount.scaleb(currency_exponent(currency)).normalize(), "f")


def _charge_filter_id(plan_code: str, charge_ref: str, key: str) -> str:
    # NOTE: GET /plans answers no lago_id for a charge filter yet; this derivation (a filter is
    # named by its plan, its charge and its canonical key, as invoice lines name it) is the
    # one to give there too, so that the two agree. See docs/lago-compatibility.md.
    return lago_id("charge_filter", plan_code, charge_ref, key)


def _filter_display_name(charge_filter: ChargeFilter) -> str:
    """Lago's: the filter's invoice_display_name, else its values."""
    return charge_filter.invoice_display_name or ", ".join(v for key in sorted(charge_filter.values)
                                                           for v in charge_filter.values[key])


def invoice_records(invoice: Invoice, reads: CatalogReads) -> list[Subscription]:
    """The subscription records the invoice bills: those of its subscription that were billed
    in its period (one, or two after a plan change inside the period)."""
    return [
        r for r in reads.records(invoice.subscription_external_id)
        if r.status in _BILLED and r.start < invoice.to_utc and (r.end is None or r.end > invoice.from_utc)
    ]


def _record_of(line: InvoiceLine, records: Sequence[Subscription]) -> Subscription | None:
    """The record a line bills: on the line's plan, and active when the line's service starts
    (two records of one plan in a period, after a re-subscription, bill different windows)."""
    for record in records:
        if record.plan_code != line.plan_code:
            continue
        start = line.from_datetime
        if start is None or (record.start <= start and (record.end is None or start < record.end)):
            return record
    return None


def _period_end(end: datetime, record: Subscription) -> str:
    """Lago's inclusive end: the last second of a period, or the instant the record ended."""
    return iso_seconds(end if end == record.end else end - timedelta(seconds=1))


def billing_period(invoice: Invoice, record: Subscription) -> dict[str, Any]:
    """Lago's billing period of one record on the invoice. The charges are for the record's
    part of the invoice's period; so is the base fee, except a plan paid in advance's, which
    pays for the following period (its line says which)."""
    start = max(record.start, invoice.from_utc)
    end = invoice.to_utc if record.end is None else min(record.end, invoice.to_utc)
    base = next((line for line in invoice.lines if line.kind == "subscription" and line.from_datetime
                 and line.to_datetime and _record_of(line, [record]) is record), None)
    base_from, base_to = (base.from_datetime, base.to_datetime) if base is not None else (start, end)
    ends_here = record.end is not None and invoice.from_utc < record.end <= invoice.to_utc
    return {
        "lago_subscription_id": record.lago_id,
        "external_subscription_id": record.external_id,
        "lago_plan_id": lago_id("plan", record.plan_code),
        "subscription_from_datetime": iso_seconds(base_from),
        "subscription_to_datetime": _period_end(base_to, record),
        "charges_from_datetime": iso_seconds(start),
        "charges_to_datetime": _period_end(end, record),
        # A starting invoice (a plan paid in advance: its first period's base fee) is Lago's
        # subscription_starting; every other is made once its period has ended (the last one
        # at the termination): Lago's periodic invoice, or its terminating one.
        "invoicing_reason": "subscription_starting" if invoice.kind == "starting"
        else "subscription_terminating" if ends_here else "subscription_periodic",
    }


def _item(line: InvoiceLine, records: Sequence[Subscription], reads: CatalogReads) -> dict[str, Any]:
    """Lago's fee item: the plan for the base fee, else the billable metric the charge is on.
    What the catalog no longer has is null, or the line's own description for the names."""
    if line.kind == "subscription":
        plan = reads.plan(line.plan_code) if line.plan_code else None
        record = _record_of(line, records)
        kind, code, item_type = "subscription", line.plan_code, "Subscription"
        item_id = record.lago_id if record is not None else None
        name = plan.name if plan is not None else None
        display = (plan.invoice_display_name or plan.name) if plan is not None else None
        charge_filter = None
    else:  # a charge's fee, its true-up (Lago's is a charge fee too) or its late usage
        charge = reads.charge(line.plan_code, line.charge_ref) if line.plan_code and line.charge_ref else None
        code = charge.billable_metric_code if charge is not None else None
        metric = reads.metric(code) if code else None
        kind, item_type = "charge", "BillableMetric"
        item_id = lago_id("billable_metric", code) if code else None  # as a charge's lago_billable_metric_id
        name = metric.name if metric is not None else code
        display = (charge.invoice_display_name if charge is not None else None) or name
        charge_filter = next((f for f in charge.filters if f.key == line.filter_key), None) \
            if charge is not None and line.filter_key else None
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


def fee_to_lago(
    invoice: Invoice, line: InvoiceLine, records: Sequence[Subscription], reads: CatalogReads
) -> dict[str, Any]:
    """One line as Lago's fee; `records` are the invoice's (`invoice_records`)."""
    charged = line.kind != "subscription" and line.plan_code is not None and line.charge_ref is not None
    return {
        "lago_id": f"{invoice.id}:{line.ref}",
        # Derived as GET /plans derives it, so it holds for a charge the plan has dropped since.
        "lago_charge_id": lago_id("charge", line.plan_code, line.charge_ref) if charged else None,
        "lago_charge_filter_id": _charge_filter_id(line.plan_code, line.charge_ref, line.filter_key)
        if charged and line.filter_key else None,
        "lago_invoice_id": invoice.id,
        "lago_true_up_fee_id": None,
        "lago_true_up_parent_fee_id": None,
        "external_subscription_id": invoice.subscription_external_id,
        "lago_customer_id": lago_id("customer", invoice.customer_external_id),
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
        "from_date": iso_exact(line.from_datetime),
        "to_date": iso_exact(line.to_datetime),
        "payment_status": invoice.payment_status,
        "created_at": iso_exact(invoice.created_at),
        "item": _item(line, records, reads),
    }


def invoice_to_lago(invoice: Invoice, reads: CatalogReads, now: datetime) -> dict[str, Any]:
    """Lago's invoice object; `now` dates its subscriptions' current billing periods."""
    status, payment = _LAGO_STATUS[invoice.status]
    total = invoice.amount_cents
    paid = total if invoice.status == "paid" else 0
    records = invoice_records(invoice, reads)
    customer = reads.customer(invoice.customer_external_id)
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
        "voided_at": iso_exact(invoice.updated_at) if invoice.status == "voided" else None,
        "created_at": iso_exact(invoice.created_at),
        "updated_at": iso_exact(invoice.updated_at),
        "file_url": invoice.hosted_invoice_url,
        "external_customer_id": invoice.customer_external_id,
        # The customers and subscriptions APIs' own renderers. A customer deleted since is null
        # (the client allows it); its subscriptions still render, without a current period.
        "customer": customer.to_lago_response() if customer is not None else None,
        "subscriptions": [
            subscription_to_lago(r, reads.plan(r.plan_code), reads.customer(r.external_customer_id), now)
            for r in records
        ],
        "billing_periods": [billing_period(invoice, r) for r in records],
        "fees": [fee_to_lago(invoice, line, records, reads) for line in invoice.lines],
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
    """`runtime` has `auth`, `invoices` (an InvoiceStore) and `adapters.catalog`: the admin
    function's."""
    resource, _, key = api_path(request).partition("/")
    if resource != "invoices" or "/" in key:
        raise route_not_found()
    runtime.auth.authenticate(request.headers.get("Authorization"))
    if request.method not in ("GET", "HEAD"):
        raise method_not_allowed()
    store = runtime.invoices
    reads, now = CatalogReads(runtime.adapters.catalog), datetime.now(UTC)  # one of each per answer
    if key:
        invoice = store.get(key)
        if invoice is None:
            raise NotFound("invoice")
        return json_response(200, {"invoice": invoice_to_lago(invoice, reads, now)})
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
    invoices = [invoice_to_lago(i, reads, now) for i in items]
    return json_response(200, {"invoices": invoices, "meta": pagination_meta(page, per_page, total)})
