"""The ports: small interfaces between the pure core and the outside world.

Each port has a Google Cloud adapter (`meterline.adapters.gcp`) and an embedded one
(`meterline.adapters.embedded`), and `tests/contract` runs one suite against both.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    # Types only: a function that never touches the catalog (process) does not import its
    # pydantic models at cold start.
    from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription
    from meterline.core.events import Event
    from meterline.core.invoices import Invoice
    from meterline.core.reports import Month
    from meterline.core.subscriptions import SubscriptionHistory
    from meterline.core.usage_query import UsageQuery, UsageRow, UsageWindow


class PublishFailed(Exception):
    """The bus did not confirm a publish. Nothing may be answered 200 after this."""


class EventBus(Protocol):
    """Carries accepted requests from ingest to process (Pub/Sub, or a SQLite queue)."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        """Publish one message and block until the bus confirms it; returns its id.

        Raises `PublishFailed` if the publish is not confirmed.
        """
        ...


class Claim(enum.Enum):
    """What the dedup store says about an event's key (the process service turns SETTLED and
    STALE into one of the others, after asking the warehouse)."""

    NEW = "new"  # first sighting: claimed for this payload, to be inserted
    # claimed for this payload less than `stale_after_s` ago: an earlier attempt may still be
    # running, or may have crashed before its insert; insert again (a copy `events_deduped` removes)
    RETRY = "retry"
    # claimed for this payload longer ago: stored, unless every attempt failed; the warehouse says
    SETTLED = "settled"
    DUPLICATE = "duplicate"  # already stored with this payload: drop
    CONFLICT = "conflict"  # the key is taken by another payload: the first one wins; reject this one
    # claimed for ANOTHER payload that no attempt has touched for `stale_after_s`: the first
    # payload's message may have been dead-lettered before its insert. The process service
    # decides whether this event may take the key over (services/process.py, "Stale claims").
    STALE = "stale"


class DedupStore(Protocol):
    """Remembers every (subscription, transaction) key and its payload hash, for a retention
    period; it records claims only, never whether an event was stored (the warehouse knows)."""

    def claim(
        self, events: Sequence[Event], *, stale_after_s: float = float("inf"), take_over: bool = False
    ) -> list[Claim]:
        """Atomically, claim each event's key (events have distinct keys).

        An absent key is written with the event's payload hash: NEW. A key with the same hash
        is RETRY if it was claimed less than `stale_after_s` ago (its touch time is refreshed:
        an attempt is alive), else SETTLED. A key with another hash is CONFLICT if an attempt
        touched it less than `stale_after_s` ago, else STALE. With `take_over=True` (the
        warehouse has no row of these keys) a SETTLED key is claimed anew (RETRY) and a STALE
        one is rewritten with this event's hash (NEW); neither is reported.
        """
        ...


class ArrivalProbe(NamedTuple):
    window_id: str
    external_subscription_id: str
    start_us: int
    end_us: int
    since_us: int


@dataclass(frozen=True)
class Rejection:
    event: Event
    reason: str


class SubscriptionTotal(NamedTuple):
    external_subscription_id: str
    events: int
    total: Decimal  # the sum of the numeric property; 0 when no event has one


# -- the warehouse -----------------------------------------------------------------------------
# One warehouse (BigQuery, or DuckDB) holds the events and the finance tables, and one adapter
# class serves all three ports below; each service is typed on the narrow one it uses (process:
# the event store; usage, portal, the billing run's late-usage check: the usage reader; the
# billing run and the payment webhook: the finance ledger). Every read is typed: the SQL belongs
# to the adapters (`meterline.adapters.sql`).


class EventStore(Protocol):
    """The `events` and `rejected_events` tables, written by process and read one key or one
    subscription's page at a time (`events_deduped`)."""

    def insert_events(self, events: Sequence[Event], processed_at_us: int) -> None:
        """Append rows with the dedup key as insertId. Raises if any row was not written."""
        ...

    def insert_rejected(self, rejections: Sequence[Rejection], rejected_at_us: int) -> None: ...

    def stored_keys(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (subscription, transaction) keys have a row in `events`, in one query."""
        ...

    def get_event(self, external_subscription_id: str, transaction_id: str) -> Event | None:
        """One event from `events_deduped`."""
        ...

    def list_events(self, external_subscription_id: str, limit: int, offset: int) -> tuple[list[Event], int]:
        """A page of events from `events_deduped`, newest first, and the total count."""
        ...


class UsageReader(Protocol):
    """The aggregate reads of the events: usage for rating, late arrivals, totals."""

    def usage_rows(self, query: UsageQuery, windows: Sequence[UsageWindow]) -> list[UsageRow]:
        """The usage of every window, deduplicated, in ONE query (`services.usage.read_usage` asks it)."""
        ...

    def windows_with_arrivals(self, probes: Sequence[ArrivalProbe], carry_over_codes: Sequence[str] = ()) -> set[str]:
        """The `window_id`s of the probes whose subscription has a row in `events` processed at
        or after `since_us` and timed in the window (widened by the usage query's dedup slack)
        or, for the codes of recurring metrics, whose events carry over, at any time before its
        end; one query reading a few narrow columns (the billing run's late-usage check)."""
        ...

    def totals(self, code: str, field: str) -> list[SubscriptionTotal]:
        """Per subscription with events of `code`: their count and the sum of property `field`."""
        ...

    def count_rejected(self) -> int:
        """How many distinct events were rejected (`rejected_events_deduped`)."""
        ...


@dataclass(frozen=True)
class ProviderObservation:
    """What the payment provider said about one of our invoices at one moment, as finance's
    `provider_invoices` table keeps it (`FinanceLedger.record_provider_invoices`): from a
    webhook event, or from a pull (`services.reconcile`). Reconciliation compares it with ours."""

    invoice_id: str
    customer_external_id: str
    issuing_date: date  # our invoice's (the table's partition)
    provider_invoice_id: str
    status: str  # the provider's: draft, open, paid, uncollectible, void
    currency: str
    total_cents: int  # our minor units
    amount_paid_cents: int
    due_at: datetime | None  # None: due when finalized (charged automatically)
    source: str  # "webhook" or "pull"
    observed_at_us: int  # the event's time, or the pull's
    provider_event_id: str | None = None  # a webhook's event id


class FinanceLedger(Protocol):
    """For finance: append-only histories next to the usage (`invoices`, `invoice_lines`,
    `payments`, `provider_invoices`; read through `invoices_latest`, `invoice_lines_latest`,
    `payments_deduped`, `provider_invoices_latest`)."""

    def record_invoice(self, invoice: Invoice, recorded_at_us: int) -> None:
        """Append one `invoices` row and its `invoice_lines` rows for the invoice as stored
        (call after each store write, with the version the store returned). Recording the same
        version again is harmless: the views keep one copy, the highest version is current."""
        ...

    def record_invoices(self, invoices: Sequence[Invoice], recorded_at_us: int) -> None:
        """`record_invoice` for many invoices in one write per table (a billing run's chunk)."""
        ...

    def record_payment(self, payment: Payment) -> None:
        """Append one `payments` row for a payment provider's event (insertId: its id)."""
        ...

    def recorded_versions(self, invoice_ids: Sequence[str], issued_since: date) -> dict[str, int]:
        """The highest version of each of `invoice_ids` that `invoices` holds (an id with none
        is absent). `issued_since`, at most the earliest of their issuing dates, bounds the
        partitions read. The billing run compares it with the store to restore what a crash
        kept from the history (`services/billing.py`)."""
        ...

    def record_provider_invoices(self, observations: Sequence[ProviderObservation]) -> None:
        """Append `provider_invoices` rows. Recording one observation twice is harmless: both
        copies carry the same content, and `provider_invoices_latest` shows one."""
        ...


class ReportReader(Protocol):
    """The finance reports (core/reports.py), run on the warehouse."""

    def report(self, name: str, month: Month | None = None) -> list[dict[str, Any]]:
        """The report's rows, typed by its columns; a monthly report needs `month` (ValidationFailed
        naming `month` without it), and an unknown name raises core.reports.UnknownReport."""
        ...


class Warehouse(EventStore, UsageReader, FinanceLedger, ReportReader, Protocol):
    """The whole warehouse, as its adapters implement it (`BigQueryWarehouse`,
    `DuckDbWarehouse`) and the composition holds it; services take the narrow ports."""


@dataclass(frozen=True)
class ApiKeyRecord:
    key_hash: str
    name: str
    prefix: str
    created_at_us: int
    revoked_at_us: int | None = None  # a revoked key is kept (and listed) but never accepted

    @property
    def revoked(self) -> bool:
        return self.revoked_at_us is not None


class ApiKeyStore(Protocol):
    """API keys, stored only as hashes. Revoked keys stay, marked with their revocation time."""

    def add(self, record: ApiKeyRecord) -> None: ...

    def find(self, key_hash: str) -> ApiKeyRecord | None:
        """The key's record, revoked or not (the authenticator refuses a revoked one)."""
        ...

    def all(self) -> Iterable[ApiKeyRecord]: ...

    def revoke(self, key_hash: str, revoked_at_us: int) -> bool:
        """Mark the key revoked; True if it was active, False if unknown or already revoked."""
        ...


@dataclass(frozen=True)
class DeadLetter:
    """A message the bus gave up on, described without its payload."""

    id: str
    reason: str  # why it was dead-lettered, as far as the bus knows
    attempts: int | None  # delivery attempts before it was dead-lettered; None if unknown
    dead_at_us: int  # when it was dead-lettered
    events: int | None  # how many events it carries; None if it cannot be decoded


class DeadLetters(Protocol):
    """The dead letters of the events subscription, listed and replayed (`meterline dead-letters`).

    Embedded: the `dead_letter` table of the SQLite queue. GCP: a pull subscription on the
    dead-letter topic. (Putting a message INTO the dead letters is an `EventBus.publish`.)
    """

    def all(self, limit: int = 1000) -> list[DeadLetter]:
        """The oldest `limit` dead letters, oldest first."""
        ...

    def replay(self, ids: Sequence[str] | None = None) -> list[str]:
        """Put these dead letters (None: all of them) back on the events bus, for a new round of
        attempts; returns the ids replayed. Unknown ids are skipped. Each adapter documents
        whether a replay is exactly once (embedded) or at least once (GCP; dedup absorbs it)."""
        ...

# -- the catalog ---------------------------------------------------------------------------
# Billable metrics and plans by code, customers by external_id, subscriptions by external_id
# (`meterline.core.catalog` models, kept as JSON documents). Adapters: SQLite
# (`adapters.embedded.sqlite_catalog`) and Firestore (`adapters.gcp.firestore_catalog`);
# `tests/contract/test_catalog_store.py` runs one suite on both.
#
# Subscriptions are stored as a HISTORY per external_id, because Lago keeps one record per
# plan: an upgrade terminates the current record and appends a new one with the same
# external_id, and a downgrade appends a pending record. Billing needs every record (the old
# plan is prorated up to the switch), so the history is written whole, with an optimistic
# version check, so that two concurrent plan changes can never both apply.


class AlreadyExists(Exception):
    """A create-only put found the key taken (Lago: 422 value_already_exist)."""


class StaleWrite(Exception):
    """The subscription history changed since it was read; read again and retry."""


class CatalogStore(Protocol):
    # Billable metrics, plans and customers are stamped by the store: a put keeps the stored
    # created_at (now, on a create), sets updated_at = now when the definition (`to_lago()`)
    # changed, and writes nothing when it did not; whatever stamps the model carries are
    # ignored. Each put returns the object as stored, stamps included.
    #
    # Billable metrics and plans, by code. `create_only` makes the put a create-if-absent that
    # raises AlreadyExists, atomically (two concurrent creates: exactly one wins).
    def put_billable_metric(self, metric: BillableMetric, *, create_only: bool = False) -> BillableMetric: ...

    def get_billable_metric(self, code: str) -> BillableMetric | None: ...

    def list_billable_metrics(self, offset: int = 0, limit: int | None = None) -> tuple[list[BillableMetric], int]:
        """A page ordered by code, and the total count."""
        ...

    def delete_billable_metric(self, code: str) -> BillableMetric | None:
        """Remove it; returns what was stored (None: there was nothing). Whether anything
        still uses it is the caller's to check (the admin service refuses then)."""
        ...

    def put_plan(self, plan: Plan, *, create_only: bool = False) -> Plan: ...

    def get_plan(self, code: str) -> Plan | None: ...

    def list_plans(self, offset: int = 0, limit: int | None = None) -> tuple[list[Plan], int]: ...

    def delete_plan(self, code: str) -> Plan | None: ...

    # Customers: upsert by external_id.
    def put_customer(self, customer: Customer) -> Customer: ...

    def get_customer(self, external_id: str) -> Customer | None: ...

    def list_customers(self, offset: int = 0, limit: int | None = None) -> tuple[list[Customer], int]: ...

    def delete_customer(self, external_id: str) -> Customer | None: ...

    # Subscriptions: one history per external_id.
    def get_subscription_history(self, external_id: str) -> SubscriptionHistory: ...

    def put_subscription_history(self, external_id: str, records: Sequence[Subscription], *, version: int) -> None:
        """Replace the history of `external_id` with `records` (oldest first), if its stored
        version is still `version`; raises StaleWrite otherwise. Every record must carry
        this external_id and one external_customer_id."""
        ...

    def list_subscriptions(self, external_customer_id: str | None = None) -> list[Subscription]:
        """Every record (all histories, all statuses), optionally of one customer, ordered by
        external_id then history order."""
        ...


# -- billing ---------------------------------------------------------------------------------


class InvoiceStore(Protocol):
    """One invoice per (subscription, period), by `Invoice.id`, with an optimistic version.
    Adapters: SQLite (`adapters.embedded.sqlite_invoices`) and Firestore
    (`adapters.gcp.firestore_invoices`); `tests/contract/test_invoice_store.py` runs one suite
    on both."""

    def create(self, invoice: Invoice) -> bool:
        """Store a new invoice (version 1) if its id is absent; False if it already exists
        (two runs at once: exactly one creates it)."""
        ...

    def get(self, invoice_id: str) -> Invoice | None: ...

    def update(self, invoice: Invoice) -> Invoice:
        """Write `invoice` if the stored version is still `invoice.version`; returns it with
        the next version. Raises StaleWrite otherwise (another run changed it: read again)."""
        ...

    def get_many(self, invoice_ids: Sequence[str]) -> dict[str, Invoice]:
        """The stored invoices of these ids, by id (absent ones are left out), in as few round
        trips as the store allows: a billing run reads every subscription's recent invoices."""
        ...

    def issue(self, invoice: Invoice, at: datetime) -> Invoice:
        """Issue an invoice: move a draft to finalized and give it the customer's next invoice number, in ONE
        transaction with the customer's counter, so a number is never given twice or lost to
        a crash. Raises StaleWrite like `update`. An invoice never stored (version 0) is
        created finalized, if it is still absent (StaleWrite otherwise)."""
        ...

    def issue_many(self, invoices: Sequence[Invoice], at: datetime) -> list[Invoice | Exception]:
        """`issue` each, in order, in as few store transactions as the store allows; each
        outcome is the finalized invoice, or the exception that refused it (StaleWrite,
        ValueError, or a store error), which used up no number. Raises only if nothing was written."""
        ...

    def list(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        statuses: Sequence[str] | None = None,
        issuing_date_from: date | None = None,
        issuing_date_to: date | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[Invoice], int]:
        """A page, newest issuing date first (then id), and the total count."""
        ...

    def find_by_provider_id(self, provider_invoice_id: str) -> Invoice | None: ...


@dataclass(frozen=True)
class Payment:
    """A payment provider's event about an invoice's payment, as finance's `payments` table
    keeps it (`FinanceLedger.record_payment`)."""

    invoice_id: str
    customer_external_id: str
    provider_event_id: str  # Stripe's event.id: one row per event
    status: str  # the payment state the event reports: succeeded, failed, ...
    amount_cents: int  # minor units
    currency: str
    at_us: int  # when the payment state changed


class ProcessedEvents(Protocol):
    """Ids of webhook events already handled (Stripe delivers at least once).

    The webhook asks `seen` first and records with `first_time` only AFTER the event's state
    change is stored (`services.payments`), so a crash in between costs a redelivery that
    re-applies an idempotent state move, never a lost event."""

    def seen(self, event_id: str) -> bool:
        """Whether `event_id` was recorded (a read; records nothing)."""
        ...

    def first_time(self, event_id: str) -> bool:
        """Record `event_id`; True the first time it is seen, atomically."""
        ...


@dataclass(frozen=True)
class ProviderInvoice:
    id: str
    # draft, open (finalized or sent, awaiting payment), paid, payment_failed (a charge was
    # declined; Stripe itself leaves the invoice open), void
    status: str
    total_cents: int  # the provider's total, in OUR minor units (compared with ours to the cent)
    hosted_invoice_url: str | None = None
    failure_code: str | None = None  # payment_failed: why ("card_declined", "no_payment_method")


class PaymentProviderError(Exception):
    """A provider call failed for a reason that a retry inside the call did not fix.

    Carries what an operator needs to look the request up at the provider (`request_id`) and
    never a secret. `retryable`: the next billing run may succeed (rate limit, network, a 5xx);
    False: it will not until someone changes something (a refused request, too many lines).
    """

    def __init__(self, operation: str, message: str, *, http_status: int | None = None, code: str | None = None,
                 request_id: str | None = None, retryable: bool = False):
        super().__init__(f"{operation}: {message}" + (f" (request {request_id})" if request_id else ""))
        self.operation, self.http_status, self.code = operation, http_status, code
        self.request_id, self.retryable = request_id, retryable


@dataclass(frozen=True)
class ListedInvoice:
    """One of our invoices as the provider lists it (`PaymentProvider.list_invoices`)."""

    provider_invoice_id: str
    invoice_id: str  # ours, from the provider invoice's metadata
    status: str  # the provider's: draft, open, paid, uncollectible, void
    currency: str
    total_cents: int  # our minor units
    amount_paid_cents: int
    due_at: datetime | None


class PaymentProvider(Protocol):
    """Where invoices are collected (Stripe). Every call is idempotent on our ids, so a run
    that crashed between two calls repeats them without creating anything twice."""

    def ensure_customer(self, customer_external_id: str, name: str | None, email: str | None) -> str:
        """The provider's customer id for ours, created once (our ids in its metadata)."""
        ...

    def ensure_invoice(self, invoice: Invoice, provider_customer_id: str, days_until_due: int | None) -> ProviderInvoice:
        """The provider's draft invoice for ours, with one item per line in integer minor
        units (created if absent, items added if missing; never twice)."""
        ...

    def finalize_invoice(self, invoice: Invoice) -> ProviderInvoice:
        """Finalize the provider's draft (it then shows our total and can be paid)."""
        ...

    def collect(self, invoice: Invoice, payment_method: str | None = None) -> ProviderInvoice:
        """Charge the saved payment method (`payment_method` when given), or send the invoice,
        per its collection method. A declined charge, and a customer without any payment
        method, are results (status payment_failed, failure_code card_declined /
        no_payment_method), not exceptions."""
        ...

    def payment_method(self, provider_customer_id: str) -> str | None:
        """The payment method a charge of the customer would use; None when they have none."""
        ...

    def checkout_url(self, provider_customer_id: str, success_url: str, payment_method_types: list[str]) -> str:
        """A new URL of the provider's page where the customer saves a payment method."""
        ...

    def list_invoices(self, created_from: datetime, created_to: datetime) -> list[ListedInvoice]:
        """Every invoice the provider created in [created_from, created_to) that carries one of
        our invoice ids in its metadata (every page); others' invoices are left out."""
        ...


@dataclass(frozen=True)
class PaymentEvent:
    """One webhook event of the provider, in Meterline's words (the Stripe adapter translates)."""

    id: str  # the provider's event id: deliveries are deduplicated on it
    type: str  # the provider's event type, e.g. invoice.payment_succeeded (logs, finance)
    occurred_at: datetime
    moves_to: str | None  # the InvoiceStatus this event means for our invoice; None: nothing to do
    provider_invoice_id: str | None = None
    invoice_id: str | None = None  # ours, from the provider object's metadata
    provider_status: str | None = None
    hosted_invoice_url: str | None = None
    amount_cents: int | None = None  # paid (payment events) or due, in our minor units
    currency: str | None = None
    # The provider invoice's own figures, in our minor units (reconciliation records them);
    # None when the event does not carry them.
    total_cents: int | None = None
    amount_paid_cents: int | None = None
    due_at: datetime | None = None


class InvalidSignature(Exception):
    """A webhook delivery whose signature is missing, wrong or stale, or whose signed body is
    not an event. The message says which (never quoting the secret)."""


class MalformedPaymentEvent(InvalidSignature):
    """A correctly signed delivery whose event Meterline cannot read (a field of the wrong type
    or out of range); `field` names it. Refused, never half applied."""

    def __init__(self, field: str, event_id: str | None = None):
        super().__init__(f"the signed event's {field} is malformed")
        self.field, self.event_id = field, event_id


class PaymentWebhooks(Protocol):
    """The provider's webhook deliveries (Stripe: `adapters.stripe.webhooks`)."""

    def verify(self, payload: bytes, signature: str | None) -> PaymentEvent:
        """The event of a delivery whose signature over the RAW body is valid and fresh;
        raises InvalidSignature otherwise."""
        ...
