"""The billing run: every closed period becomes one exact invoice, collected once.

    BillingService(...).run(as_of)   # Cloud Scheduler calls the `bill` function; also `meterline bill`

For each subscription (external_id) it finds the periods that have ended by `as_of` and are
not finalized yet, applies the downgrades that were due at their boundary, rates every
(record, period) with the usage service (ONE usage query for the whole run), and moves each
invoice one step further:

  1. absent   -> a draft (create-if-absent: two runs at once create one); or, when its
                 grace period has already ended, straight to finalized (step 2's end)
  2. draft    -> its lines refreshed from the usage so far, until the period's end plus the
                 customer's grace period; then finalized, with the customer's next number
  3. finalized-> synced to the payment provider, step by step (customer, invoice and items,
                 finalize and compare the totals to the cent, collect); `provider_step` records
                 each step, so a crash between two resumes at the next run
Late usage (events of an already finalized period) is billed on the draft of a later period
as "late usage" lines (`core.invoices.late_lines`). A record on a plan paid in advance also
gets a "starting" invoice for its first period's base fee (`_starting_period`), which goes
through the same steps at once (no grace: it waits for no usage).

What a crash at each step costs (every step is idempotent; nothing is lost):

  | crash                                   | next run                                    | cost |
  | before the draft is created             | creates it                                  | none |
  | after create, before a refresh/finalize | refreshes or finalizes it (versioned write) | none |
  | inside issue (one store transaction;    | all or nothing: finalizes them then          | none |
  |   embedded: a chunk, `issue_many`)      |                                             |      |
  | during a refused chunk's retries, one   | finalizes the rest (create-if-absent)       | none |
  |   invoice per transaction               |                                             |      |
  | between two provider calls              | repeats them; each is idempotent on our ids | none |
  | after collect, before storing the step  | collect again: the provider's idempotency   | none |
  |                                         | key returns the first result                |      |
  | after a store write, before the finance | finds the history behind the store's        | none* |
  |   flush (`_FinanceLog`), or a chunk the | version (`_restore_history`) and writes the |       |
  |   warehouse refused                     | invoice's current state again               |       |

  * for the finance tables: at worst a state written twice (the views keep one copy). Their
    latest rows equal the store again; the versions the crashed run replaced before the crash
    (a draft refreshed, then finalized) are not in the store any more, and get no row.

One subscription's failure (a provider error, a store error) is logged and counted in `failed`;
the others are billed, and the failed one is tried again by the next run. A subscription that
cannot be billed for its own sake (its amounts leave the money domain, its plan reads a property
the usage SQL cannot) is flagged with that reason (`flagged`, `flag_reasons`) and tried again by
each run. A chunk of invoices the store refuses as a whole (one document it cannot write) is
written again one invoice per transaction, so that one bad invoice never takes the others.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from meterline import logs
from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription
from meterline.core.clock import to_us
from meterline.core.errors import Unbillable
from meterline.core.invoices import (
    NO_PAYMENT_METHOD,
    Invoice,
    InvoiceLine,
    ProviderStep,
    invoice_id,
    late_lines,
    lines_from_fees,
    recurring_charges,
)
from meterline.core.pricing.periods import BillingSchedule, Period, charges_window, period_containing
from meterline.core.pricing.rating import rate_subscription_start
from meterline.core.subscriptions import apply_due_downgrades
from meterline.ports import ArrivalProbe, CatalogStore, FinanceLedger, InvoiceStore, PaymentProvider, StaleWrite
from meterline.services.usage import RatedPeriods, UsageService

_log = logs.get("billing")

# How many periods back a run looks for periods that were never invoiced (a scheduler that
# did not run for a while), and for finalized periods that received late usage.
CATCH_UP_PERIODS = 3
# NOTE: an event is stamped `processed_at` just before its insert, and becomes visible when the
# insert returns: a row stamped before a run read the usage may appear after it. An insert
# lasts at most one process attempt (Cloud Run's event timeout: 9 min; the embedded lease:
# 60 s), so rows processed this long before the read are looked at again.
ARRIVAL_MARGIN_US = 30 * 60 * 1_000_000
RECORD_CHUNK = 500  # finance-table rows are written this many invoices at a time
# At most this many invoices missing from the finance history are written again by one run
# (`_restore_history`), oldest first; the rest by the next runs. After an outage of the
# warehouse it bounds what a run adds to its own writes.
RESTORE_LIMIT = 10 * RECORD_CHUNK
FINALIZE_CHUNK = 500  # invoices created finalized in one store call (InvoiceStore.issue_many)


@dataclass
class BillingResult:
    """What one run did, for the function's answer and the CLI's table."""

    as_of: datetime
    drafted: int = 0
    refreshed: int = 0
    finalized: int = 0
    collected: int = 0
    # Held for a person: invoices the provider totals differently (their id), and subscriptions
    # that cannot be billed for their own sake (their external_id); why, in `flag_reasons`.
    flagged: list[str] = field(default_factory=list)
    flag_reasons: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # subscription external_id -> error type
    complete: bool = True  # False when the time budget ran out; the next run continues
    finance_unrecorded: int = 0  # state changes the finance tables refused (logged)
    finance_restored: int = 0  # invoices whose stored state the history lacked, written again
    invoices: list[Invoice] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "as_of": self.as_of.isoformat(),
            "drafted": self.drafted,
            "refreshed": self.refreshed,
            "finalized": self.finalized,
            "collected": self.collected,
            "flagged": self.flagged,
            "flag_reasons": self.flag_reasons,
            "failed": self.failed,
            "complete": self.complete,
            "finance_unrecorded": self.finance_unrecorded,
            "finance_restored": self.finance_restored,
        }


@dataclass(frozen=True)
class BillingTerms:
    grace: timedelta
    collection_method: str
    days_until_due: int | None


def billing_terms(customer: Customer, default_grace: timedelta) -> BillingTerms:
    """The customer's grace period and how their invoices are collected.

    Lago's fields: `billing_configuration.invoice_grace_period` (days; 0 allowed) and
    `net_payment_term` (days until due). Meterline's own: `billing_configuration.
    collection_method` ("charge_automatically", the default, or "send_invoice")."""
    config = customer.billing_configuration or {}
    days = config.get("invoice_grace_period")
    grace = default_grace if days is None else timedelta(days=float(days))
    method = config.get("collection_method") or "charge_automatically"
    if method not in ("charge_automatically", "send_invoice"):
        raise ValueError(f"customer {customer.external_id}: unknown collection_method {method!r}")
    due = customer.net_payment_term if method == "send_invoice" else None
    return BillingTerms(grace, method, 30 if method == "send_invoice" and due is None else due)


@dataclass(eq=False)
class _Group:
    """One invoice's worth: the records of one external_id in one period (an upgrade leaves two)."""

    external_id: str
    period: Period
    customer: Customer
    currency: str
    records: list[Subscription] = field(default_factory=list)
    kind: str = "periodic"  # or "starting": see `Invoice.kind`

    @functools.cached_property
    def id(self) -> str:
        return invoice_id(self.external_id, self.period.start_date, self.period.end_date, self.kind)


class _FinanceLog:
    """One run's state changes for the finance tables (BigQuery / DuckDB history), written in
    chunks of RECORD_CHUNK by one background thread, so that the warehouse's write (a
    streaming insert, a DuckDB insert) overlaps the run's own work: one write per chunk, not
    per invoice.

    NOTE: a crash before a chunk is written leaves up to RECORD_CHUNK state changes out of the
    finance history (never out of the invoice store, which is the truth); the next run finds
    them missing and writes them again (`BillingService._restore_history`). A chunk the
    warehouse refuses is logged and counted (`BillingResult.finance_unrecorded`), restored the
    same way, and never fails a subscription's billing.
    """

    def __init__(self, ledger: FinanceLedger | None, as_of: datetime):
        self._ledger = ledger
        self._at_us = to_us(as_of)
        self._pending: list[Invoice] = []
        self._writes: list[tuple[int, Future]] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finance") if ledger else None

    def add(self, invoice: Invoice) -> None:
        if self._writer is None:
            return
        self._pending.append(invoice)
        if len(self._pending) >= RECORD_CHUNK:
            self._submit()

    def _submit(self) -> None:
        if self._pending and self._writer is not None and self._ledger is not None:
            chunk, self._pending = self._pending, []
            self._writes.append((len(chunk), self._writer.submit(self._ledger.record_invoices, chunk, self._at_us)))

    def close(self) -> int:
        """Write what is left, wait for every write; how many state changes were refused."""
        if self._writer is None:
            return 0
        self._submit()
        self._writer.shutdown(wait=True)
        refused = 0
        for count, write in self._writes:
            if (error := write.exception()) is not None:
                refused += count
                logs.failure(_log, "finance tables refused a chunk of invoice state changes", error, invoices=count)
        return refused


class BillingService:
    def __init__(
        self,
        catalog: CatalogStore,
        usage: UsageService,
        invoices: InvoiceStore,
        ledger: FinanceLedger | None = None,
        payments: PaymentProvider | None = None,
        default_grace: timedelta = timedelta(hours=1),
        time_budget_s: float = float("inf"),
        clock: Callable[[], float] = time.monotonic,
        arrival_margin_us: int = ARRIVAL_MARGIN_US,
    ):
        self._catalog = catalog
        self._usage = usage
        self._invoices = invoices
        self._ledger = ledger
        self._payments = payments
        self._default_grace = default_grace
        self._budget = time_budget_s
        self._clock = clock
        self._arrival_margin_us = arrival_margin_us
        self._local = threading.local()

    # -- the run -------------------------------------------------------------------------------

    def run(self, as_of: datetime, progress: Callable[[int, int], None] | None = None) -> BillingResult:
        started = self._clock()
        result = BillingResult(as_of)
        # Per run and per thread: two runs on one instance (a function serves requests in
        # threads) never mix their finance rows.
        finance = self._local.finance = _FinanceLog(self._ledger, as_of)
        try:
            self._run(as_of, progress, started, result)
        finally:
            result.finance_unrecorded = finance.close()
        logs.event(_log, "billing run", logging.INFO, **{k: v for k, v in result.summary().items() if k != "as_of"},
                   seconds=round(self._clock() - started, 3))
        return result

    def _run(self, as_of: datetime, progress, started: float, result: BillingResult) -> None:
        records = self._apply_due_downgrades(self._catalog.list_subscriptions(), as_of, result)
        # Read in bulk: one list each, not one read per subscription (10,000 sequential
        # Firestore reads would not fit in a function's timeout).
        plans = {p.code: p for p in self._catalog.list_plans()[0]}
        customers = {c.external_id: c for c in self._catalog.list_customers()[0]}
        metrics = self._catalog.list_billable_metrics()[0]
        groups: dict[str, _Group] = {}
        previous: dict[str, list[_Group]] = defaultdict(list)  # finalized earlier periods, for late usage
        # Pass 1: each record's candidate invoices (the periods in the run's window; no read).
        candidates: list[tuple[_Group, Subscription]] = []
        for record in records:
            try:
                customer = customers.get(record.external_customer_id) or self._need(
                    self._catalog.get_customer(record.external_customer_id), "customer", record)
                plan = plans.get(record.plan_code) or self._need(self._catalog.get_plan(record.plan_code), "plan", record)
            except LookupError as exc:
                result.failed[record.external_id] = str(exc)
                continue
            customers[customer.external_id], plans[plan.code] = customer, plan
            currency = customer.currency or plan.amount_currency
            for period in self._periods_in_window(record, plan, customer, as_of):
                candidates.append((_Group(record.external_id, period, customer, currency), record))
            first = self._starting_period(record, plan, customer, as_of, plans)
            if first is not None:
                candidates.append((_Group(record.external_id, first, customer, currency, kind="starting"), record))
        # The invoices this run has read or written, by subscription then id: each is read once,
        # here in one bulk read, and the steps below see this run's own writes through it.
        stored = self._invoices.get_many(sorted({g.id for g, _ in candidates}))
        self._restore_history(stored, result)
        known: dict[str, dict[str, Invoice | None]] = defaultdict(dict)
        # Pass 2: which need work (open, or starting), and which are finalized (late usage).
        for group, record in candidates:
            existing = known[group.external_id][group.id] = stored.get(group.id)
            if self._needs_work(existing):
                groups.setdefault(group.id, group).records.append(record)
            elif group.kind == "periodic":
                group.records.append(record)
                previous[record.external_id].append(group)

        # Each line says whether its charge's metric recurs (seats): recurring revenue, not usage.
        recurring = recurring_charges(plans.values(), metrics)
        previous = self._with_arrivals(previous, known, metrics)
        items = [(r, g.period) for g in groups.values() for r in g.records]
        items += [(r, g.period) for gs in previous.values() for g in gs for r in g.records]
        read_at = datetime.now(UTC)  # before the read: see _with_arrivals
        rated = self._usage.rate(items, customers, plans) if items else RatedPeriods()  # as read above
        # The fees of each (record, period), by the record's identity (two records of one
        # external_id may share a plan and a period after a re-subscription).
        fees_of = {(id(r.subscription), r.period.start_date): r.draft.fees for r in rated}
        # A period whose usage could not be read (its data broke the query) is flagged and
        # retried by the next run; every other subscription is billed.
        # A period that cannot be billed for its own sake (`reason`: its amounts, its plan's
        # names) is flagged; the next run tries it again, after its data or catalog is fixed.
        for failure in rated.failed:
            if failure.reason is not None:
                self._flag(result, failure.subscription.external_id, failure.reason, failure.error)
            else:
                result.failed[failure.subscription.external_id] = failure.error

        ordered = sorted(groups.values(), key=lambda g: (g.external_id, g.period.start_date, g.kind != "starting"))
        # Invoices to create finalized, written FINALIZE_CHUNK at a time (`_finalize_batch`).
        batch: list[tuple[_Group, Invoice]] = []
        for done, group in enumerate(ordered, 1):
            if self._clock() - started > self._budget:
                result.complete = False  # the next scheduled run continues where this one stopped
                break
            if group.external_id in result.failed or group.external_id in result.flag_reasons:
                continue
            if batch and (len(batch) >= FINALIZE_CHUNK or batch[-1][0].external_id == group.external_id):
                # A later period's late lines must see the earlier one finalized: written first.
                self._finalize_batch(batch, known, as_of, result)
            with self._one_subscription(group, known, result):
                mine = known[group.external_id]
                if group.kind == "starting":
                    # Billed as it stood when it started, whenever the run comes: a termination or
                    # an upgrade later in the period does not shrink what was due in advance (Lago
                    # would credit the unused days; Meterline issues no credit notes).
                    (record,) = group.records
                    as_started = record.model_copy(update={"status": "active", "terminated_at": None})
                    fees = list(rate_subscription_start(as_started, plans[record.plan_code], group.customer).fees)
                    late: Sequence[InvoiceLine] = ()
                else:
                    fees = [f for rec in group.records for f in fees_of[(id(rec), group.period.start_date)]]
                    late = self._late_lines(group, previous.get(group.external_id, []), fees_of, mine)
                lines = lines_from_fees(fees, recurring) + tuple(late)
                invoice = self._advance(group, lines, as_of, read_at, result, mine.get(group.id), batch)
                if invoice is not None:  # None: in the batch
                    mine[group.id] = invoice
                    result.invoices.append(invoice)
            if progress is not None:
                progress(done, len(ordered))
        self._finalize_batch(batch, known, as_of, result)
        # Those that were waiting for a payment method as the run began (not those it just failed).
        waiting = [i.id for i in stored.values() if i.status == "payment_failed" and i.flag == NO_PAYMENT_METHOD]
        self._retry_without_payment_method(waiting, known, as_of, started, result)

    def _finalize_batch(self, batch: list[tuple[_Group, Invoice]], known, as_of: datetime, result: BillingResult) -> None:
        """Create the batch's invoices finalized, in as few store transactions as the store
        allows (`InvoiceStore.issue_many`), then carry each on as `_advance` would. Empties
        `batch`. One invoice's refusal or failure is its subscription's alone."""
        if not batch:
            return
        chunk, batch[:] = list(batch), []
        try:
            outcomes: list = self._invoices.issue_many([draft for _, draft in chunk], as_of)
        except Exception as exc:  # noqa: BLE001 - nothing in the chunk was written: one at a time
            # NOTE: one document the store refuses (or a store error) rolls back its whole
            # transaction. Retried one invoice per transaction, it fails alone and the others
            # are written; a crash during the retries leaves some written and the rest for the
            # next run (each create is create-if-absent), never a number used twice.
            logs.failure(_log, "a batch of finalized invoices was refused; written one at a time", exc,
                         invoices=len(chunk))
            outcomes = [self._issue_one(draft, as_of) for _, draft in chunk]
        for (group, _), outcome in zip(chunk, outcomes, strict=True):
            with self._one_subscription(group, known, result):
                if isinstance(outcome, Exception):
                    raise outcome
                result.finalized += 1
                self._record(outcome)
                known[group.external_id][group.id] = invoice = self._carry_on(outcome, group, as_of, result)
                result.invoices.append(invoice)

    def _issue_one(self, draft: Invoice, as_of: datetime) -> Invoice | Exception:
        """`draft` created finalized in a store transaction of its own; the exception if refused."""
        try:
            (outcome,) = self._invoices.issue_many([draft], as_of)
        except Exception as exc:  # noqa: BLE001 - this invoice's alone
            return exc
        return outcome

    @staticmethod
    def _flag(result: BillingResult, external_id: str, reason: str, error: str) -> None:
        """Hold a subscription that cannot be billed for its own sake; the others are billed."""
        if external_id not in result.flag_reasons:
            result.flagged.append(external_id)
            result.flag_reasons[external_id] = reason
            logs.event(_log, "subscription flagged: not billed until its data or catalog is fixed", logging.ERROR,
                       subscription=external_id, reason=reason, error=error[:500])

    @contextmanager
    def _one_subscription(self, group: _Group, known, result: BillingResult) -> Iterator[None]:
        """One invoice's step, whose failure is its subscription's alone."""
        try:
            yield
        except Unbillable as exc:  # e.g. its late-usage lines take the total out of the money domain
            self._flag(result, group.external_id, exc.reason, str(exc))
        except StaleWrite:
            known[group.external_id][group.id] = self._invoices.get(group.id)  # what the other writer left
            # Another run (or the webhook) wrote this invoice since it was read: that writer
            # carries it on, and the next run resumes from what is stored. Not a failure.
            logs.event(_log, "invoice changed by another writer; left to it", logging.INFO,
                       subscription=group.external_id, invoice_id=group.id)
        except Exception as exc:  # noqa: BLE001 - one subscription never blocks the others
            result.failed[group.external_id] = type(exc).__name__
            logs.failure(_log, "billing failed for one subscription; the next run retries it", exc,
                         subscription=group.external_id, invoice_id=group.id)

    # -- which periods ---------------------------------------------------------------------------

    def _periods_in_window(self, record: Subscription, plan: Plan, customer: Customer, as_of: datetime) -> list[Period]:
        """This record's periods that have ended by `as_of`, newest first, walking back at most
        CATCH_UP_PERIODS: those that still need work (a scheduler that did not run for a
        while) and the finalized ones, whose late usage the open invoice carries."""
        if record.status not in ("active", "terminated") or record.started_at is None or record.started_at > as_of:
            return []
        schedule = BillingSchedule.of(record, plan, customer)
        ended_at = record.terminated_at if record.terminated_at is not None and record.terminated_at <= as_of else None
        if ended_at is not None and record.next_plan_code is None:
            # A real termination closes its last period at once: the final invoice.
            period = period_containing(schedule, ended_at - timedelta(microseconds=1))
        else:
            # A record switched by a plan change is billed with its period, beside the new record.
            current = period_containing(schedule, as_of)
            period = period_containing(schedule, current.start_utc - timedelta(microseconds=1))
        out = []
        for _ in range(CATCH_UP_PERIODS):
            if period.end_utc <= record.started_at:
                break
            if not (ended_at is not None and period.start_utc >= ended_at):
                out.append(period)
            period = period_containing(schedule, period.start_utc - timedelta(microseconds=1))
        return out

    def _starting_period(self, record: Subscription, plan: Plan, customer: Customer, as_of: datetime,
                         plans: dict[str, Plan]) -> Period | None:
        """The period whose base fee this record's starting invoice bills: a record on a plan
        paid in advance, started by `as_of` within the last CATCH_UP_PERIODS periods. Its later
        periods' fees come on the periodic invoices before them (core.pricing.rating); the
        first has no invoice before it."""
        if not plan.pay_in_advance or record.status not in ("active", "terminated") or record.started_at is None:
            return None
        start = record.start
        if start > as_of or (record.terminated_at is not None and record.terminated_at <= start):
            return None
        schedule = BillingSchedule.of(record, plan, customer)
        first = period_containing(schedule, start)
        earliest = period_containing(schedule, as_of)
        for _ in range(CATCH_UP_PERIODS):
            earliest = period_containing(schedule, earliest.start_utc - timedelta(microseconds=1))
        if first.start_utc < earliest.start_utc:
            return None
        if record.previous_plan_code is not None and start != first.start_utc:
            # NOTE: an upgrade inside a period. If the old plan was paid in advance too, the whole
            # period is paid already; Lago would charge the new plan's rest and credit the old
            # one's, and Meterline issues no credit notes: the rest of that period is not billed
            # again. From an in-arrears plan, the old record billed only its own days.
            previous = plans.get(record.previous_plan_code) or self._catalog.get_plan(record.previous_plan_code)
            if previous is None or previous.pay_in_advance:
                return None
        return first

    def _needs_work(self, invoice: Invoice | None) -> bool:
        if invoice is None or invoice.status == "draft":
            return True
        # Finalized here but not yet through the provider's steps (a crash, a provider outage).
        return (self._payments is not None and invoice.status == "finalized" and invoice.flag is None
                and invoice.provider_step is not ProviderStep.COLLECTED)

    # -- rating ----------------------------------------------------------------------------------

    def _with_arrivals(self, previous: dict[str, list[_Group]], known,
                       metrics: Sequence[BillableMetric]) -> dict[str, list[_Group]]:
        """The finalized periods worth re-rating for late usage: those with events processed
        since their invoice's usage was read (less ARRIVAL_MARGIN), in one narrow query. The
        others' usage is what they were invoiced for: rating them again would find no late
        line, and would read every event of CATCH_UP_PERIODS periods on every run."""
        # Per invoice: the records' own usage windows, as rating reads them (a period's records
        # of an upgrade are candidates of their own, under one invoice id). The probe spans the
        # first start to the last end within the period: an event timed before the subscription
        # started is not its usage, so its arrival re-rates nothing.
        spans: dict[str, tuple[str, datetime, datetime, int]] = {}
        for external_id, gs in previous.items():
            for g in gs:
                invoice = known[external_id].get(g.id)
                if invoice is None or invoice.usage_read_at is None:
                    continue
                since = to_us(invoice.usage_read_at) - self._arrival_margin_us
                for record in g.records:
                    start, end = charges_window(g.period, record)
                    if g.id in spans:
                        _, first, last, _ = spans[g.id]
                        start, end = min(start, first), max(end, last)
                    spans[g.id] = (external_id, start, end, since)
        probes = {gid: ArrivalProbe(gid, ext, to_us(start), to_us(end), since)
                  for gid, (ext, start, end, since) in spans.items()}
        if not probes:
            return previous
        recurring = [m.code for m in metrics if m.recurring]
        arrived = self._usage.windows_with_arrivals(list(probes.values()), recurring)
        kept = {external_id: [g for g in gs if g.id not in probes or g.id in arrived] for external_id, gs in previous.items()}
        return {external_id: gs for external_id, gs in kept.items() if gs}

    def _late_lines(self, group: _Group, earlier: Sequence[_Group], fees_of,
                    known: dict[str, Invoice | None]) -> tuple[InvoiceLine, ...]:
        """Late usage of this subscription's finalized periods before `group`'s, for its draft.
        `known` holds every invoice of the subscription in the run's window, as this run left
        them (so a period finalized earlier in this run counts its late lines as billed)."""
        out: list[InvoiceLine] = []
        for old in earlier:
            if old.period.start_date >= group.period.start_date:
                continue
            finalized = known.get(old.id)
            if finalized is None or finalized.status == "draft":
                continue
            billed_later = [
                line for inv in known.values()
                if inv is not None and inv.status != "draft"
                and old.period.end_date < inv.period_start and inv.period_end < group.period.start_date
                for line in inv.lines if line.late_for is not None
            ]
            fees = [f for rec in old.records for f in fees_of[(id(rec), old.period.start_date)]]
            lines = late_lines(finalized, billed_later, fees, on=group.id)
            out.extend(lines)
        return tuple(out)

    # -- one invoice, one step -----------------------------------------------------------------

    def _advance(self, group: _Group, lines: tuple[InvoiceLine, ...], as_of: datetime, read_at: datetime,
                 result: BillingResult, invoice: Invoice | None, batch: list[tuple[_Group, Invoice]]) -> Invoice | None:
        """One step further for the invoice as read this run (None: absent); a stale read
        costs nothing, since every write is create-if-absent or checks the version. None when
        the invoice went into `batch` (`_finalize_batch` carries it on)."""
        terms = billing_terms(group.customer, self._default_grace)
        if invoice is None:
            invoice = self._draft(group, lines, terms, as_of, read_at)
            if as_of >= invoice.grace_until:
                # Its grace period ended before it was first billed: it is never a draft, and is
                # created finalized, number and all, with others in one store transaction
                # (StaleWrite if another run created it meanwhile: that run carries it on).
                batch.append((group, invoice))
                return None
            if self._invoices.create(invoice):
                result.drafted += 1
                invoice = replace(invoice, version=1)  # as stored
                self._record(invoice)
            else:
                invoice = self._invoices.get(group.id)  # another run made it first
            assert invoice is not None
        if invoice.status == "draft":
            if invoice.lines != lines:
                invoice = self._invoices.update(replace(invoice, lines=lines, updated_at=as_of, usage_read_at=read_at))
                result.refreshed += 1
                self._record(invoice)
            if as_of < invoice.grace_until:
                return invoice
            # Its lines are this run's usage, whether or not they changed.
            invoice = self._invoices.issue(replace(invoice, usage_read_at=read_at), as_of)
            result.finalized += 1
            self._record(invoice)
        return self._carry_on(invoice, group, as_of, result)

    def _carry_on(self, invoice: Invoice, group: _Group, as_of: datetime, result: BillingResult) -> Invoice:
        """A finalized invoice goes on to the payment provider."""
        if invoice.status == "finalized" and self._payments is not None and invoice.flag is None:
            invoice = self._collect(invoice, group.customer, as_of, result)
        return invoice

    def _draft(self, group: _Group, lines, terms: BillingTerms, as_of: datetime, read_at: datetime) -> Invoice:
        period = group.period
        if group.kind == "starting":
            # Issued as the record starts, and final at once: no usage is waited for.
            ends = group.records[0].start
            issuing_date = ends.astimezone(group.customer.zone).date()
            grace = timedelta(0)
        else:
            # A final invoice (every record of the period really terminated in it) closes at the
            # termination; any other at the period's end.
            final = [r.terminated_at for r in group.records
                     if r.terminated_at and r.next_plan_code is None and period.contains(r.terminated_at)]
            ends = max(final) if final and len(final) == len(group.records) else period.end_utc
            issuing_date = period.end_date + timedelta(days=1) if ends == period.end_utc else ends.date()
            grace = terms.grace
        return Invoice(
            id=group.id,
            customer_external_id=group.customer.external_id,
            subscription_external_id=group.external_id,
            currency=group.currency,
            period_start=period.start_date,
            period_end=period.end_date,
            from_utc=period.start_utc,
            to_utc=period.end_utc,
            issuing_date=issuing_date,
            grace_until=ends + grace,
            kind=group.kind,  # type: ignore[arg-type]
            lines=lines,
            created_at=as_of,
            updated_at=as_of,
            usage_read_at=read_at,
            collection_method=terms.collection_method,  # type: ignore[arg-type]
            days_until_due=terms.days_until_due,
        )

    # -- the payment provider ------------------------------------------------------------------

    def _collect(self, invoice: Invoice, customer: Customer, as_of: datetime, result: BillingResult) -> Invoice:
        payments = self._payments
        assert payments is not None
        if invoice.provider_step is None:
            customer_id = invoice.provider_customer_id or payments.ensure_customer(
                customer.external_id, customer.name, customer.email)
            remote = payments.ensure_invoice(replace(invoice, provider_customer_id=customer_id), customer_id, invoice.days_until_due)
            invoice = self._invoices.update(invoice.stepped(
                ProviderStep.INVOICE, as_of, provider_customer_id=customer_id, provider_invoice_id=remote.id))
        if invoice.provider_step is ProviderStep.INVOICE:
            remote = payments.finalize_invoice(invoice)
            flag = None if remote.total_cents == invoice.amount_cents else "provider_total_mismatch"
            invoice = self._invoices.update(invoice.stepped(
                ProviderStep.FINALIZED, as_of, hosted_invoice_url=remote.hosted_invoice_url, flag=flag))
            if flag is not None:
                # NOTE: never collect an amount we did not compute; a person looks at it.
                result.flagged.append(invoice.id)
                result.flag_reasons[invoice.id] = flag
                logs.event(_log, "provider total differs from ours; not collected", logging.ERROR,
                           invoice_id=invoice.id, ours=invoice.amount_cents, theirs=remote.total_cents)
                self._record(invoice)
                return invoice
        if invoice.provider_step is ProviderStep.FINALIZED:
            remote = payments.collect(invoice)
            # "paid" (charged), "payment_failed" (declined: the customer pays on the hosted page;
            # or no payment method: charged again once there is one), or "open" (sent).
            status = remote.status if remote.status in ("paid", "payment_failed") else None
            flag = NO_PAYMENT_METHOD if status == "payment_failed" and remote.failure_code == NO_PAYMENT_METHOD else None
            if status is not None and invoice.status != status:
                invoice = invoice.moved(status, as_of)  # type: ignore[arg-type]
            invoice = self._invoices.update(invoice.stepped(ProviderStep.COLLECTED, as_of, flag=flag))
            result.collected += 1
            self._record(invoice)
            if flag is not None:
                # Once per invoice (the move happens once), as a WARNING: the customer must act.
                logs.event(_log, "payment failed: the customer has no payment method; charged again once they have one",
                           logging.WARNING, invoice_id=invoice.id, customer=customer.external_id,
                           provider_invoice_id=invoice.provider_invoice_id, reason=flag)
        return invoice

    def _retry_without_payment_method(self, waiting: list[str], known, as_of: datetime, started: float,
                                      result: BillingResult) -> None:
        """Charge again the invoices (of this run's window) that failed for want of a payment
        method, once the customer has one: one look per customer at the provider, and a charge
        only then; nothing is logged while they still have none."""
        if self._payments is None or not waiting:
            return
        latest = {inv.id: inv for mine in known.values() for inv in mine.values() if inv is not None}
        pending = [latest[i] for i in waiting if i in latest]
        pending = [inv for inv in pending if inv.status == "payment_failed" and inv.flag == NO_PAYMENT_METHOD]
        methods: dict[str, str | None] = {}
        for invoice in sorted(pending, key=lambda i: (i.customer_external_id, i.issuing_date, i.id)):
            if self._clock() - started > self._budget:
                result.complete = False
                return
            try:
                invoice = self._charge_again(invoice, methods, as_of)
            except StaleWrite:
                continue  # the webhook moved it meanwhile (paid on the hosted page): nothing to do
            except Exception as exc:  # noqa: BLE001 - one subscription never blocks the others
                result.failed[invoice.subscription_external_id] = type(exc).__name__
                logs.failure(_log, "charging again failed for one invoice; the next run retries it", exc,
                             subscription=invoice.subscription_external_id, invoice_id=invoice.id)
                continue
            if invoice.flag is None:
                result.collected += 1
                self._record(invoice)
                known[invoice.subscription_external_id][invoice.id] = invoice

    def _charge_again(self, invoice: Invoice, methods: dict[str, str | None], as_of: datetime) -> Invoice:
        """`invoice` charged with the customer's payment method if they have one now (`methods`:
        the provider's answer per customer, looked up once a run); unchanged otherwise."""
        payments = self._payments
        assert payments is not None and invoice.provider_customer_id is not None  # set by the failed collect
        customer_id = invoice.provider_customer_id
        if customer_id not in methods:
            methods[customer_id] = payments.payment_method(customer_id)
        method = methods[customer_id]
        if method is None:
            return invoice
        remote = payments.collect(invoice, method)
        if remote.status == "paid":
            return self._invoices.update(invoice.moved("paid", as_of, flag=None))
        if remote.status == "payment_failed" and remote.failure_code != NO_PAYMENT_METHOD:
            # Declined: from now on a payment_failed invoice like any other (the customer pays on
            # the hosted page), and the same method is not tried again in this run.
            methods[customer_id] = None
            logs.event(_log, "charged again with the customer's new payment method: declined", logging.INFO,
                       invoice_id=invoice.id, code=remote.failure_code)
            return self._invoices.update(replace(invoice, flag=None, updated_at=as_of))
        return invoice

    # -- bookkeeping -----------------------------------------------------------------------------

    def _apply_due_downgrades(self, records: list[Subscription], as_of: datetime, result: BillingResult) -> list[Subscription]:
        """Switch every downgrade due by `as_of` at its boundary, in the catalog; the records
        to bill are the catalog's afterwards."""
        due = {r.external_id for r in records if r.status == "active" and r.next_plan_code and r.downgrade_plan_date}
        if not due:
            return records
        for external_id in sorted(due):
            try:
                history = self._catalog.get_subscription_history(external_id)
                customer = self._catalog.get_customer(history.records[0].external_customer_id)
                if customer is None:
                    continue
                switched = apply_due_downgrades(list(history.records), as_of, customer.zone)
                if switched is not None:
                    self._catalog.put_subscription_history(external_id, switched, version=history.version)
            except StaleWrite:
                continue  # the admin API or another run changed it: the next run sees the result
            except Exception as exc:  # noqa: BLE001
                result.failed[external_id] = type(exc).__name__
        return self._catalog.list_subscriptions()

    def _restore_history(self, stored: dict[str, Invoice], result: BillingResult) -> None:
        """Write again the invoices of the run's window whose stored version the finance history
        lacks (a run that crashed after its store writes and before its finance flush, a chunk
        the warehouse refused): one warehouse read per run, and the rows go with this run's.

        NOTE: a sweep rather than an outbox written in the store's transaction, because every
        finance row is keyed by (invoice id, store version) and the store keeps each invoice's
        version: "what the history lacks" is one comparison, the same on SQLite + DuckDB and on
        Firestore + BigQuery, with no change to any store write. An outbox would add a document
        to every write path of both stores, and a drain. The sweep restores each invoice's
        current state (see the crash table's note); its reach is the run's window
        (CATCH_UP_PERIODS), which holds every invoice a run writes. An invoice the webhook moved
        is restored by Stripe's redelivery (services/payments.py), and also by this when in the
        window. A repeat (another run's flush still in flight) is a copy the views drop."""
        if self._ledger is None or not stored:
            return
        try:
            recorded = self._ledger.recorded_versions(list(stored), min(i.issuing_date for i in stored.values()))
        except Exception as exc:  # noqa: BLE001 - the history waits for the next run; billing does not
            logs.failure(_log, "could not read the finance history's versions; the next run compares again", exc,
                         invoices=len(stored))
            return
        missing = sorted((i for i in stored.values() if recorded.get(i.id, 0) < i.version),
                         key=lambda i: (i.issuing_date, i.id))
        if not missing:
            return
        for invoice in missing[:RESTORE_LIMIT]:
            self._record(invoice)
        result.finance_restored = min(len(missing), RESTORE_LIMIT)
        logs.event(_log, "finance history behind the invoice store: current states written again", logging.WARNING,
                   invoices=result.finance_restored, left_for_next_run=max(0, len(missing) - RESTORE_LIMIT))

    def _record(self, invoice: Invoice | None) -> None:
        """A state change for the finance tables (this run's `_FinanceLog`)."""
        if invoice is not None:
            self._local.finance.add(invoice)

    @staticmethod
    def _need(found, what: str, record: Subscription):
        if found is None:
            raise LookupError(f"{what} of subscription {record.external_id} not found")
        return found
