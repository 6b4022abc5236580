"""The two backends the contract suites run on: the GCP adapters against the real Pub/Sub and
Firestore emulators and bqemulator (started by the session fixtures in tests/conftest.py), and
the embedded adapters on SQLite and DuckDB files. Each bundles a bus, a dedup store, a
warehouse and a way to pull what the bus delivered."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from meterline.ports import DedupStore, EventBus, Warehouse


@dataclass
class Delivery:
    """One delivered message: `ack` settles it, `redeliver` hands it back to the bus."""

    data: bytes
    ack: Any
    redeliver: Any


@dataclass
class Backend:
    name: str
    bus: EventBus
    dedup: DedupStore
    warehouse: Warehouse
    pull: Any  # (max_messages) -> list[Delivery]
    api_keys: Any = None


def embedded_backend(tmp_path) -> Backend:
    from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse
    from meterline.adapters.embedded.sqlite import SqliteDatabase
    from meterline.adapters.embedded.sqlite_dedup import SqliteDedupStore
    from meterline.adapters.embedded.sqlite_keys import SqliteApiKeyStore
    from meterline.adapters.embedded.sqlite_queue import SqliteQueue

    db = SqliteDatabase(tmp_path / "m.sqlite")
    queue = SqliteQueue(db, max_attempts=50)

    def pull(n: int) -> list[Delivery]:
        msgs = queue.lease(n, lease_seconds=3600)

        def redeliver(m):
            # Give the message straight back, as Pub/Sub does when an ack deadline is set to 0.
            with db.write() as conn:
                conn.execute("UPDATE queue SET leased_until = 0 WHERE id = ?", (m.id,))

        return [Delivery(m.data, lambda m=m: queue.ack(m.id), lambda m=m: redeliver(m)) for m in msgs]

    return Backend("embedded", queue, SqliteDedupStore(db), DuckDbWarehouse(tmp_path / "w.duckdb"), pull, SqliteApiKeyStore(db))


def gcp_backend(request, monkeypatch) -> Backend:
    from google.cloud import pubsub_v1

    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
    from meterline.adapters.gcp.clients import bigquery_client, firestore_client, publisher_client
    from meterline.adapters.gcp.firestore_dedup import FirestoreDedupStore
    from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore
    from meterline.adapters.gcp.pubsub_bus import PubSubEventBus
    from meterline.config import Settings

    pubsub = request.getfixturevalue("pubsub_emulator")
    firestore = request.getfixturevalue("firestore_emulator")
    bigquery = request.getfixturevalue("bigquery_emulator")
    for k, v in {**pubsub.env, **firestore.env, **bigquery.env}.items():
        monkeypatch.setenv(k, v)
    project = f"test-{uuid.uuid4().hex[:8]}"
    settings = Settings(backend="gcp", google_cloud_project=project, bigquery_dataset=f"ds_{uuid.uuid4().hex[:8]}")

    publisher = publisher_client()
    bus = PubSubEventBus(publisher, project, "events")
    publisher.create_topic(name=bus.topic_path)
    subscriber = pubsub_v1.SubscriberClient()
    sub_path = subscriber.subscription_path(project, "process")
    subscriber.create_subscription(name=sub_path, topic=bus.topic_path, ack_deadline_seconds=600)

    def pull(n: int) -> list[Delivery]:
        resp = subscriber.pull(subscription=sub_path, max_messages=n, timeout=10)
        out = []
        for rm in resp.received_messages:
            out.append(Delivery(
                rm.message.data,
                lambda a=rm.ack_id: subscriber.acknowledge(subscription=sub_path, ack_ids=[a]),
                lambda a=rm.ack_id: subscriber.modify_ack_deadline(subscription=sub_path, ack_ids=[a], ack_deadline_seconds=0),
            ))
        return out

    bq = BigQueryWarehouse(bigquery_client(settings), "test", settings.bigquery_dataset)
    bq.ensure_schema()
    fs = firestore_client(settings)
    return Backend("gcp", bus, FirestoreDedupStore(fs), bq, pull, FirestoreApiKeyStore(fs))


@dataclass
class GcpBillingStores:
    """The billing run's stores on the emulators: a Firestore catalog and invoice store (the
    client too, for the other Firestore adapters) and a bqemulator warehouse, in a project and a
    dataset of their own."""

    firestore: Any
    catalog: Any
    invoices: Any
    warehouse: Any


def gcp_billing_stores(firestore_emulator, bigquery_emulator, monkeypatch) -> GcpBillingStores:
    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
    from meterline.adapters.gcp.clients import bigquery_client, firestore_client
    from meterline.adapters.gcp.firestore_catalog import FirestoreCatalogStore
    from meterline.adapters.gcp.firestore_invoices import FirestoreInvoiceStore
    from meterline.config import Settings

    for key, value in {**firestore_emulator.env, **bigquery_emulator.env}.items():
        monkeypatch.setenv(key, value)
    settings = Settings(backend="gcp", google_cloud_project=f"test-{uuid.uuid4().hex[:8]}",
                        bigquery_dataset=f"ds_{uuid.uuid4().hex[:8]}")
    warehouse = BigQueryWarehouse(bigquery_client(settings), "test", settings.bigquery_dataset)
    warehouse.ensure_schema()
    firestore = firestore_client(settings)
    return GcpBillingStores(firestore, FirestoreCatalogStore(firestore), FirestoreInvoiceStore(firestore), warehouse)


def bigquery_warehouse(emulator) -> Warehouse:
    """A BigQueryWarehouse on bqemulator, in a dataset of its own (its reset), schema created."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse

    client = bigquery.Client(
        project="test", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=emulator.url)
    )
    bq = BigQueryWarehouse(client, "test", f"ds_{uuid.uuid4().hex[:8]}")
    bq.ensure_schema()
    return bq
