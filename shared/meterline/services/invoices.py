"""The invoices service: what the invoices API shows of an invoice, read from the stores.

Invoices are made by the billing run (`services/billing.py`); this only reads them. An invoice
stores its lines with the plan, charge and filter they came from (`core.invoices.InvoiceLine`);
the customer, the subscription records and each line's charge and metric are read from the
catalog as it is now, each at most once per answer however many invoices and fees name it. What
was deleted since reads as None, and the invoice is shown without it. Lago's shape of the
result is `entrypoints/lago.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TypeVar

from meterline.core.catalog import BillableMetric, Charge, Customer, Plan, Subscription
from meterline.core.errors import NotFound
from meterline.core.invoices import Invoice, InvoiceLine
from meterline.core.subscriptions import SubscriptionView, subscription_view, with_lago_ids
from meterline.ports import CatalogStore, InvoiceStore

__all__ = ["InvoiceDetails", "InvoicesService", "invoice_records", "record_of"]

# The records a billing run bills (core: a pending record has not started, a canceled one never did).
_BILLED = ("active", "terminated")

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class InvoiceDetails:
    """An invoice with what the catalog now says of it."""

    invoice: Invoice
    customer: Customer | None  # None: deleted since
    # The records the invoice bills (`invoice_records`), each with its plan and, when active,
    # its current billing period.
    subscriptions: tuple[SubscriptionView, ...]
    # Each line's charge (by line ref; None: the plan or the charge is gone) and the metrics
    # those charges are on (by code; None: deleted since).
    charges: Mapping[str, Charge | None]
    metrics: Mapping[str, BillableMetric | None]
    plans: Mapping[str, Plan | None]  # by code: every plan its lines and records name

    @property
    def records(self) -> list[Subscription]:
        return [s.record for s in self.subscriptions]

    def record_of(self, line: InvoiceLine) -> Subscription | None:
        return record_of(line, self.records)


def invoice_records(invoice: Invoice, records: Sequence[Subscription]) -> list[Subscription]:
    """Of the subscription's records, those the invoice bills: billed in its period (one, or two
    after a plan change inside the period)."""
    return [
        r for r in records
        if r.status in _BILLED and r.start < invoice.to_utc and (r.end is None or r.end > invoice.from_utc)
    ]


def record_of(line: InvoiceLine, records: Sequence[Subscription]) -> Subscription | None:
    """The record a line bills: on the line's plan, and active when the line's service starts
    (two records of one plan in a period, after a re-subscription, bill different windows)."""
    for record in records:
        if record.plan_code != line.plan_code:
            continue
        start = line.from_datetime
        if start is None or (record.start <= start and (record.end is None or start < record.end)):
            return record
    return None


class _CatalogReads:
    """The catalog reads of one answer, each made at most once: the invoices of a page share
    their customers, plans and metrics, and every fee of an invoice names the same few."""

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


class InvoicesService:
    def __init__(self, invoices: InvoiceStore, catalog: CatalogStore,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._invoices = invoices
        self._catalog = catalog
        self._clock = clock

    def get(self, invoice_id: str) -> InvoiceDetails:
        invoice = self._invoices.get(invoice_id)
        if invoice is None:
            raise NotFound("invoice")
        return _details(invoice, _CatalogReads(self._catalog), self._clock())

    def details(self, invoices: Sequence[Invoice]) -> list[InvoiceDetails]:
        """Invoices already in hand (a billing run's), each with what the catalog says of it."""
        reads, now = _CatalogReads(self._catalog), self._clock()
        return [_details(i, reads, now) for i in invoices]

    def list_page(
        self,
        *,
        customer_external_id: str | None = None,
        statuses: Sequence[str] | None = None,
        issuing_date_from: date | None = None,
        issuing_date_to: date | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> tuple[list[InvoiceDetails], int]:
        """One page of invoices (newest first) and the total that match."""
        items, total = self._invoices.list(
            customer_external_id=customer_external_id, statuses=statuses,
            issuing_date_from=issuing_date_from, issuing_date_to=issuing_date_to,
            offset=(page - 1) * per_page, limit=per_page,
        )
        reads, now = _CatalogReads(self._catalog), self._clock()  # one of each per answer
        return [_details(i, reads, now) for i in items], total


def _details(invoice: Invoice, reads: _CatalogReads, now: datetime) -> InvoiceDetails:
    """`now` dates the current billing periods of the invoice's subscriptions."""
    records = invoice_records(invoice, reads.records(invoice.subscription_external_id))
    charges: dict[str, Charge | None] = {}
    metrics: dict[str, BillableMetric | None] = {}
    plans: dict[str, Plan | None] = {}
    for line in invoice.lines:
        if line.plan_code:
            plans[line.plan_code] = reads.plan(line.plan_code)
        if line.kind == "subscription":
            continue
        charge = reads.charge(line.plan_code, line.charge_ref) if line.plan_code and line.charge_ref else None
        charges[line.ref] = charge
        code = charge.billable_metric_code if charge is not None else None
        if code:
            metrics[code] = reads.metric(code)
    views = tuple(subscription_view(r, reads.plan(r.plan_code), reads.customer(r.external_customer_id), now)
                  for r in records)
    for view in views:
        plans[view.record.plan_code] = view.plan
    return InvoiceDetails(invoice, reads.customer(invoice.customer_external_id), views, charges, metrics, plans)
