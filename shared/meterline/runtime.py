"""The composition root: each function builds only the adapters and services it uses.

Two layers, both lazy:
  * `Adapters` builds each port's adapter for the backend on first use, once per process
    (`EmbeddedAdapters`: SQLite + DuckDB; `GcpAdapters`: Pub/Sub, Firestore, BigQuery).
  * A runtime per function asks only for what its code touches, so a Cloud Function imports
    one or two Google SDKs, not three, and its service account needs only those roles:

        ingest          the bus, the API keys, the catalog (numeric fields); the event store on GET only
        process         the dedup store and the warehouse's event store
        admin           the catalog, the API keys, and the invoices (invoices API)
        bill            the catalog, the invoices, the usage reader, finance ledger and reports, Stripe if a key is set
        stripe_webhook  the invoices, the processed event ids, the finance ledger, the webhook secret
        portal          the API keys, the catalog, the invoices, the usage reader, the signing key;
                        Stripe for checkout links

docs/architecture.md ("Composition") has the same table with each function's SDKs and roles.

`LocalRuntime` is `meterline serve`'s (and the demo's and the tests'): every function over
one set of embedded adapters, in one process. Nothing here runs at import time.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from meterline.config import Settings, get_settings
from meterline.ports import (
    ApiKeyStore,
    CatalogStore,
    DeadLetters,
    DedupStore,
    EventBus,
    EventStore,
    FinanceLedger,
    InvoiceStore,
    PaymentProvider,
    ProcessedEvents,
    ReportReader,
    UsageReader,
    Warehouse,
)

if TYPE_CHECKING:
    from meterline.services.auth import ApiKeyAuthenticator

T = TypeVar("T")


class once(Generic[T]):
    """A cached property built under a lock: two threads' first uses build one client, not two
    (functools.cached_property has no lock since Python 3.12, and a client is costly)."""

    def __init__(self, build: Callable[[Any], T]):
        self._build = build
        self._lock = threading.Lock()
        self.__doc__ = build.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: type | None = None) -> T:
        if instance is None:
            return self  # type: ignore[return-value]
        try:
            return instance.__dict__[self._name]
        except KeyError:
            pass
        with self._lock:
            if self._name not in instance.__dict__:
                instance.__dict__[self._name] = self._build(instance)
            return instance.__dict__[self._name]


class Adapters:
    """One adapter per port, built on first use. Subclasses say how, per backend."""

    def __init__(self, settings: Settings):
        self.settings = settings

    bus: EventBus
    dead_letters: EventBus  # where process moves a message it gives up on
    dead_letter_queue: DeadLetters  # the dead letters, listed and replayed (`meterline dead-letters`)
    dedup: DedupStore
    warehouse: Warehouse  # one adapter for its three ports, below
    api_keys: ApiKeyStore
    catalog: CatalogStore
    invoices: InvoiceStore
    processed_events: ProcessedEvents  # webhook event ids already handled

    # The warehouse under the name of each narrow port a service takes: one object, built once.
    @property
    def event_store(self) -> EventStore:
        return self.warehouse

    @property
    def usage_reader(self) -> UsageReader:
        return self.warehouse

    @property
    def finance_ledger(self) -> FinanceLedger:
        return self.warehouse

    @property
    def report_reader(self) -> ReportReader:
        return self.warehouse

    @once
    def payment_provider(self) -> PaymentProvider | None:
        """Stripe when a key is set; None (the embedded default): invoices are finalized
        locally and nothing is sent."""
        key = self.settings.stripe_api_key
        if key is None:
            return None
        from meterline.adapters.stripe.payments import StripePayments

        return StripePayments.from_settings(self.settings)


class EmbeddedAdapters(Adapters):
    """SQLite for the queue, dedup, keys and catalog (several processes may open it), DuckDB
    for the warehouse (one process at a time: `meterline serve`, see `meterline.local.datadir`)."""

    @once
    def db(self):
        from meterline.adapters.embedded.sqlite import SqliteDatabase

        return SqliteDatabase(self.settings.sqlite_path)

    @once
    def queue(self):
        from meterline.adapters.embedded.sqlite_queue import SqliteQueue

        return SqliteQueue(self.db, self.settings.max_delivery_attempts)

    @property
    def bus(self) -> EventBus:  # type: ignore[override]
        return self.queue

    @once
    def dead_letters(self) -> EventBus:
        from meterline.adapters.embedded.sqlite_queue import SqliteDeadLetters

        return SqliteDeadLetters(self.queue)

    @property
    def dead_letter_queue(self) -> DeadLetters:  # type: ignore[override]
        return self.dead_letters  # type: ignore[return-value]  # SqliteDeadLetters is both

    @once
    def dedup(self) -> DedupStore:
        from meterline.adapters.embedded.sqlite_dedup import SqliteDedupStore

        return SqliteDedupStore(self.db)

    @once
    def warehouse(self) -> Warehouse:
        from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse

        return DuckDbWarehouse(self.settings.duckdb_path)

    @once
    def api_keys(self) -> ApiKeyStore:
        from meterline.adapters.embedded.sqlite_keys import SqliteApiKeyStore

        return SqliteApiKeyStore(self.db)

    @once
    def catalog(self) -> CatalogStore:
        from meterline.adapters.embedded.sqlite_catalog import SqliteCatalogStore

        return SqliteCatalogStore(self.db)

    @once
    def invoices(self) -> InvoiceStore:
        from meterline.adapters.embedded.sqlite_invoices import SqliteInvoiceStore

        return SqliteInvoiceStore(self.db)

    @once
    def processed_events(self) -> ProcessedEvents:
        from meterline.adapters.embedded.sqlite_invoices import SqliteProcessedEvents

        return SqliteProcessedEvents(self.db)


class GcpAdapters(Adapters):
    """Google Cloud; each SDK is imported by the first adapter that needs it."""

    @once
    def firestore(self):
        from meterline.adapters.gcp.clients import firestore_client

        return firestore_client(self.settings)

    @once
    def bus(self) -> EventBus:
        from meterline.adapters.gcp.clients import publisher_client
        from meterline.adapters.gcp.pubsub_bus import PubSubEventBus

        s = self.settings
        assert s.google_cloud_project  # Settings guarantees it for backend=gcp
        return PubSubEventBus(
            publisher_client(), s.google_cloud_project, s.events_topic, s.publish_timeout_seconds,
            linger_seconds=s.publish_linger_seconds,
        )

    @once
    def dead_letters(self) -> EventBus:
        """The dead-letter topic, for messages process gives up on by age (rare: built then)."""
        from meterline.adapters.gcp.clients import publisher_client
        from meterline.adapters.gcp.pubsub_bus import PubSubEventBus

        s = self.settings
        assert s.google_cloud_project
        return PubSubEventBus(publisher_client(), s.google_cloud_project, s.dead_letter_topic, s.publish_timeout_seconds)

    @once
    def dead_letter_queue(self) -> DeadLetters:
        """The dead-letter subscription, pulled by `meterline dead-letters` (replays publish on `bus`)."""
        from google.cloud import pubsub_v1  # type: ignore[attr-defined]  # the package declares no such attribute

        from meterline.adapters.gcp.dead_letters import PubSubDeadLetters

        s = self.settings
        assert s.google_cloud_project
        subscriber = pubsub_v1.SubscriberClient()
        path = subscriber.subscription_path(s.google_cloud_project, s.dead_letter_subscription)
        return PubSubDeadLetters(subscriber, path, self.bus)

    @once
    def dedup(self) -> DedupStore:
        from meterline.adapters.gcp.firestore_dedup import FirestoreDedupStore

        return FirestoreDedupStore(self.firestore, retention=timedelta(days=self.settings.dedup_retention_days))

    @once
    def warehouse(self) -> Warehouse:
        from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
        from meterline.adapters.gcp.clients import bigquery_client

        s = self.settings
        assert s.google_cloud_project
        return BigQueryWarehouse(bigquery_client(s), s.google_cloud_project, s.bigquery_dataset)

    @once
    def api_keys(self) -> ApiKeyStore:
        from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore

        return FirestoreApiKeyStore(self.firestore)

    @once
    def catalog(self) -> CatalogStore:
        from meterline.adapters.gcp.firestore_catalog import FirestoreCatalogStore

        return FirestoreCatalogStore(self.firestore)

    @once
    def invoices(self) -> InvoiceStore:
        from meterline.adapters.gcp.firestore_invoices import FirestoreInvoiceStore

        return FirestoreInvoiceStore(self.firestore)

    @once
    def processed_events(self) -> ProcessedEvents:
        from meterline.adapters.gcp.firestore_invoices import FirestoreProcessedEvents

        return FirestoreProcessedEvents(self.firestore)


def adapters_for(settings: Settings) -> Adapters:
    return GcpAdapters(settings) if settings.backend == "gcp" else EmbeddedAdapters(settings)


def finance_reports(adapters: Adapters) -> ReportReader:
    """The reports as finance reads them (services/reports.py), on these adapters' warehouse;
    `meterline report` builds the same when it holds the warehouse itself."""
    from meterline.services.reconcile import Reconciliation
    from meterline.services.reports import FinanceReports

    return FinanceReports(adapters.report_reader, Reconciliation(
        adapters.invoices, adapters.catalog, adapters.usage_reader, adapters.report_reader))


# -- one runtime per function -------------------------------------------------------------


class _FunctionRuntime:
    """What every function's runtime has: its adapters and settings, and (built only by the
    functions that authenticate API keys) the key check."""

    def __init__(self, adapters: Adapters, auth: ApiKeyAuthenticator | None = None):
        self.adapters = adapters
        self.settings = adapters.settings
        # Given: the key check (and its cache) of another runtime in the same process
        # (`LocalRuntime`), so a revoked key leaves every function at once.
        self._shared_auth = auth

    @once
    def auth(self) -> ApiKeyAuthenticator:
        if self._shared_auth is not None:
            return self._shared_auth
        from meterline.services.auth import ApiKeyAuthenticator

        return ApiKeyAuthenticator(self.adapters.api_keys, self.settings.api_key_cache_seconds)


class IngestRuntime(_FunctionRuntime):
    """Cloud Function `ingest`: Lago's event API in front of the bus."""

    @once
    def numeric_fields(self):
        from meterline.services.numeric_fields import NumericFields

        return NumericFields(self.adapters.catalog)

    @once
    def service(self):
        from meterline.services.ingest import IngestService

        return IngestService(self.adapters.bus, self.numeric_fields)

    def warm(self) -> None:
        self.auth, self.service  # noqa: B018 - build the hot path before the first request

    @property
    def events(self) -> EventStore:
        """The reads behind GET /events (built on the first GET, not at cold start)."""
        return self.adapters.event_store


class ProcessRuntime(_FunctionRuntime):
    """Cloud Function `process`: dedup, then the warehouse (no API keys: Pub/Sub pushes)."""

    @once
    def service(self):
        from meterline.services.process import ProcessService

        return ProcessService(self.adapters.dedup, self.adapters.event_store, self.settings.claim_takeover_seconds)

    def warm(self) -> None:
        self.service  # noqa: B018


class AdminRuntime(_FunctionRuntime):
    """Cloud Function `admin`: the catalog API."""

    def __init__(self, adapters: Adapters, on_metrics_changed: Callable[[], None] | None = None,
                 auth: ApiKeyAuthenticator | None = None):
        super().__init__(adapters, auth)
        # In one process with ingest (meterline serve), a new metric reaches ingest's numeric
        # check at once; a separate ingest function sees it within its reload time.
        self._on_metrics_changed = on_metrics_changed

    @once
    def service(self):
        from meterline.services.admin import AdminService

        return AdminService(self.adapters.catalog, on_metrics_changed=self._on_metrics_changed)

    @once
    def invoices(self):
        """The invoices API's service (built on the first GET /invoices)."""
        from meterline.services.invoices import InvoicesService

        return InvoicesService(self.adapters.invoices, self.adapters.catalog)

    def warm(self) -> None:
        self.auth, self.service  # noqa: B018


class BillRuntime(_FunctionRuntime):
    """Cloud Function `bill`: the billing run (Cloud Scheduler calls it with OIDC)."""

    @once
    def usage(self):
        from meterline.services.usage import UsageService

        return UsageService(self.adapters.catalog, self.adapters.usage_reader)

    @once
    def billing(self):
        from datetime import timedelta

        from meterline.services.billing import BillingService

        s = self.settings
        return BillingService(
            self.adapters.catalog, self.usage, self.adapters.invoices, self.adapters.finance_ledger, self.adapters.payment_provider,
            default_grace=timedelta(seconds=s.invoice_grace_seconds), time_budget_s=s.billing_time_budget_seconds,
        )

    @once
    def reports(self) -> ReportReader:
        """The finance reports (`GET /api/v1/reports/{name}` in `meterline serve`)."""
        return finance_reports(self.adapters)

    def warm(self) -> None:
        self.billing  # noqa: B018


class StripeWebhookRuntime(_FunctionRuntime):
    """Cloud Function `stripe_webhook`: the signature check, the invoice store, the processed
    event ids and the finance tables. No API keys (Stripe signs instead) and no Stripe client:
    the webhook never calls Stripe back. Needs METERLINE_STRIPE_WEBHOOK_SECRET."""

    @once
    def webhooks(self):
        from meterline.adapters.stripe.webhooks import StripeWebhooks
        from meterline.config import ConfigError

        secret = self.settings.stripe_webhook_secret
        if secret is None or not secret.get_secret_value():
            raise ConfigError("the stripe_webhook function needs METERLINE_STRIPE_WEBHOOK_SECRET")
        return StripeWebhooks(secret.get_secret_value(), self.settings.stripe_webhook_tolerance_seconds)

    @once
    def payment_events(self):
        from meterline.services.payments import PaymentEvents

        a = self.adapters
        return PaymentEvents(a.invoices, a.processed_events, a.finance_ledger)

    def warm(self) -> None:
        self.webhooks, self.payment_events  # noqa: B018 - fail fast on a missing secret, at cold start


class PortalRuntime(_FunctionRuntime):
    """Cloud Function `portal`: current usage (API key) and the customer's signed usage page.
    Needs METERLINE_PORTAL_SIGNING_KEY on GCP (embedded: generated into the data dir)."""

    @once
    def service(self):
        from datetime import timedelta

        from meterline.adapters.embedded.keyfile import signing_key
        from meterline.services.portal import PortalService
        from meterline.services.portal_links import LinkSigner
        from meterline.services.usage import UsageService

        s = self.settings
        secret = s.portal_signing_key.get_secret_value() if s.portal_signing_key else None
        signer = LinkSigner(signing_key(secret, s.backend, s.data_dir), timedelta(seconds=s.portal_link_seconds))
        a = self.adapters
        return PortalService(a.catalog, UsageService(a.catalog, a.usage_reader), a.usage_reader, a.invoices, signer)

    @once
    def checkout(self):
        """Checkout links (Stripe): needs METERLINE_STRIPE_API_KEY, else every link is refused."""
        from meterline.services.checkout import CheckoutLinks

        return CheckoutLinks(self.adapters.catalog, self.adapters.payment_provider, self.settings.stripe_checkout_success_url)

    def warm(self) -> None:
        self.auth, self.service  # noqa: B018 - an unset signing key on GCP fails here, at cold start


class LocalRuntime:
    """Every function over one set of adapters, in one process (`meterline serve`, the demo,
    the tests). The adapters are shared, so is one API-key cache."""

    def __init__(self, adapters: Adapters):
        self.adapters = adapters
        self.settings = adapters.settings
        self.ingest = IngestRuntime(adapters)
        self.process = ProcessRuntime(adapters)
        auth = self.ingest.auth  # one cache: a revoked key leaves every function at once
        self.admin = AdminRuntime(adapters, on_metrics_changed=self.ingest.numeric_fields.invalidate, auth=auth)
        self.bill = BillRuntime(adapters, auth)
        self.stripe_webhook = StripeWebhookRuntime(adapters)
        self.portal = PortalRuntime(adapters, auth)

    @property
    def queue(self):
        """The embedded queue that the local worker drains (Pub/Sub pushes on GCP)."""
        return self.adapters.queue  # type: ignore[attr-defined]


def build_runtime(settings: Settings) -> LocalRuntime:
    return LocalRuntime(adapters_for(settings))


# -- the process's runtimes, built on first use -----------------------------------------------

_lock = threading.Lock()
_runtimes: dict[str, Any] = {}
_FACTORIES: dict[str, Callable[[Adapters], Any]] = {
    "ingest": IngestRuntime,
    "process": ProcessRuntime,
    "admin": AdminRuntime,
    "bill": BillRuntime,
    "stripe_webhook": StripeWebhookRuntime,
    "portal": PortalRuntime,
}


def _get(kind: str) -> Any:
    runtime = _runtimes.get(kind)
    if runtime is None:
        with _lock:
            runtime = _runtimes.get(kind)
            if runtime is None:
                runtime = _FACTORIES[kind](adapters_for(get_settings()))
                runtime.warm()  # the clients this function uses, and only those
                _runtimes[kind] = runtime
                # What lives as long as the process stays out of the collector's scans (a full
                # collection over the gcp clients' 106,000 objects once took 64 ms mid-request).
                gc.freeze()
    return runtime


def ingest_runtime() -> IngestRuntime:
    return _get("ingest")


def process_runtime() -> ProcessRuntime:
    return _get("process")


def admin_runtime() -> AdminRuntime:
    return _get("admin")


def bill_runtime() -> BillRuntime:
    return _get("bill")


def stripe_webhook_runtime() -> StripeWebhookRuntime:
    return _get("stripe_webhook")


def portal_runtime() -> PortalRuntime:
    return _get("portal")


def set_runtime(runtime: LocalRuntime | None) -> None:
    """Install a local runtime as every function's (tests); None resets to lazy building."""
    with _lock:
        _runtimes.clear()
        if runtime is not None:
            _runtimes.update(ingest=runtime.ingest, process=runtime.process, admin=runtime.admin, bill=runtime.bill,
                             stripe_webhook=runtime.stripe_webhook, portal=runtime.portal)


def set_function_runtime(kind: str, runtime: Any | None) -> None:
    """Install one function's runtime (a test with adapters of its own); None forgets it."""
    with _lock:
        if runtime is None:
            _runtimes.pop(kind, None)
        else:
            _runtimes[kind] = runtime
