"""A billing run on an embedded runtime (SQLite invoice store, DuckDB warehouse) with the
example catalog and November's events (tests/harness/november.py): the billing run, the bill
function, the invoices API, the portal and the Stripe end-to-end tests bill the same customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from meterline.config import Settings
from meterline.core.clock import now_us
from meterline.core.events import parse_batch_body
from meterline.core.messages import encode_message
from meterline.ports import Warehouse
from meterline.runtime import LocalRuntime, adapters_for
from meterline.services import catalog_apply
from meterline.services.billing import BillingService
from meterline.services.usage import UsageService
from tests.harness.november import EVENTS
from tests.support import REPO_ROOT, embedded_runtime

EXAMPLE = REPO_ROOT / "shared/meterline/local/example_catalog.yaml"
DEC = datetime(2026, 12, 1, tzinfo=UTC)
JAN = datetime(2027, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Billing:
    """An embedded runtime with the example catalog, one customer on the hybrid plan since
    November 1 (so that November is its first period), and November's events."""

    def __init__(self, tmp_path, customer: dict | None = None, *, warehouse: Warehouse | None = None,
                 since: str = "2026-11-01T00:00:00Z", events: list[dict] = EVENTS):
        """`warehouse` in place of the data dir's DuckDB (bqemulator's, for the reports on both
        engines); `since` the subscription's start, `events` what is posted first."""
        from meterline.adapters.embedded.sqlite_invoices import SqliteInvoiceStore

        if warehouse is None:
            self.runtime = embedded_runtime(tmp_path)
        else:
            adapters = adapters_for(Settings(backend="embedded", data_dir=tmp_path))
            adapters.warehouse = warehouse  # set before any runtime reads it: every function shares it
            self.runtime = LocalRuntime(adapters)
        adapters = self.runtime.adapters
        catalog = catalog_apply.load(EXAMPLE)
        catalog_apply.apply(adapters.catalog, catalog, catalog_apply.plan_changes(adapters.catalog, catalog))
        self.plan = catalog.plans[0]
        self.admin = self.runtime.admin.service
        self.admin.upsert_customer({"external_id": "acme", "name": "Acme", "currency": "USD", "timezone": "UTC", **(customer or {})})
        self.admin.create_subscription({"external_id": "sub_acme", "external_customer_id": "acme",
                                        "plan_code": self.plan.code, "subscription_at": since})
        self.invoices = SqliteInvoiceStore(adapters.db)  # type: ignore[attr-defined]
        self.post(events)

    def post(self, events: list[dict]) -> None:
        batch = parse_batch_body(orjson.dumps({"events": events}), now_us())
        self.runtime.process.service.handle_message(encode_message(batch))

    def service(self, **kwargs) -> BillingService:
        adapters = self.runtime.adapters
        return BillingService(adapters.catalog, UsageService(adapters.catalog, adapters.warehouse), self.invoices,
                              adapters.warehouse, **kwargs)

    def run(self, as_of: datetime):
        return self.service().run(as_of)

    def all(self):
        return self.invoices.list()[0]


def amounts(invoice) -> dict[str, int]:
    lines = {}
    for line in invoice.lines:
        key = f"{line.charge_ref or line.kind}:{line.filter_key}"
        lines[key] = lines.get(key, 0) + line.amount_cents
    return {"total": invoice.amount_cents, **lines}


def save_card(client, provider_customer_id: str, number: str | None = None) -> None:
    """What a customer does on Stripe's pages, on localstripe: a card becomes their default
    payment method (`number` None: pm_card_visa)."""
    if number is None:
        pm = client.v1.payment_methods.attach("pm_card_visa", {"customer": provider_customer_id})
    else:  # Stripe refuses to attach a declining card; it is made the default directly
        pm = client.v1.payment_methods.create(
            {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
    client.v1.customers.update(provider_customer_id, {"invoice_settings": {"default_payment_method": pm.id}})
