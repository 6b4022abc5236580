"""Targets for the Lago compatibility suite: Meterline as a Lago client reaches it (the
fixtures that start them are in conftest.py).

    serve  `meterline serve` in a subprocess on a free loopback port (embedded backend)
    gcp    the ingest, process, admin and portal Cloud Functions under functions-framework, on
           the Pub/Sub and Firestore emulators and bqemulator, behind infra/router.py: the
           loopback router that sends each path where the load balancer's URL map does (the
           same table, meterline.routes), so one base URL serves the client

The tests talk to a target through Lago's official clients only. To check what was stored
they read the target's own stores: `catalog` (the CatalogStore the server writes) and
`warehouse()` (the events table: BigQuery at any time; DuckDB once `meterline serve`, which
holds it, has stopped).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.router import Router, start_router
from infra.servers import HOST, LocalServer, _free_port, start_function, wait_healthy
from tests.support import env


@dataclass
class Target:
    name: str
    url: str  # the base URL a Lago client is given (it appends /api/v1/)
    api_key: str
    catalog: Any  # CatalogStore
    _warehouse: Callable[[], Any]
    _stop: Callable[[], None] = field(default=lambda: None)

    def client(self):
        from lago_python_client.client import Client

        return Client(api_key=self.api_key, api_url=self.url)

    @contextlib.contextmanager
    def warehouse(self) -> Iterator[Any]:
        """The events table, to read what was counted (stops `meterline serve` first: it holds DuckDB)."""
        yield self._warehouse()

    def stop(self) -> None:
        self._stop()


# ---------------------------------------------------------------------------
# meterline serve
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def serve_target(data_dir: Path, env: dict[str, str] | None = None) -> Iterator[Target]:
    from meterline.adapters.embedded.sqlite import SqliteDatabase
    from meterline.adapters.embedded.sqlite_catalog import SqliteCatalogStore
    from meterline.adapters.embedded.sqlite_keys import SqliteApiKeyStore
    from meterline.core.clock import now_us
    from meterline.services.auth import create_api_key

    db = SqliteDatabase(data_dir / "meterline.sqlite")  # the file serve opens too (several processes may)
    api_key = create_api_key(SqliteApiKeyStore(db), "lago-compat", now_us())
    port = _free_port()
    url = f"http://{HOST}:{port}"
    log = open(data_dir / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "meterline", "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, "METERLINE_BACKEND": "embedded", "NO_PROXY": "127.0.0.1,localhost", **(env or {})},
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # serve stops cleanly: the worker drains, the warehouse is released
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def warehouse():
        from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse

        stop()
        return DuckDbWarehouse(data_dir / "warehouse.duckdb")

    try:
        wait_healthy(url, proc)
        yield Target("serve", url, api_key, SqliteCatalogStore(db), warehouse, stop)
    finally:
        stop()
        log.close()


# ---------------------------------------------------------------------------
# The Cloud Functions on the emulators
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def gcp_target(pubsub, firestore, bigquery) -> Iterator[Target]:
    from google.cloud import pubsub_v1

    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
    from meterline.adapters.gcp.clients import bigquery_client, firestore_client
    from meterline.adapters.gcp.firestore_catalog import FirestoreCatalogStore
    from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore
    from meterline.config import Settings
    from meterline.core.clock import now_us
    from meterline.services.auth import create_api_key

    project = f"compat-{uuid.uuid4().hex[:8]}"
    dataset = f"compat_{uuid.uuid4().hex[:8]}"
    emulators = {**pubsub.env, **firestore.env, **bigquery.env}
    function_env = {
        **emulators,
        "METERLINE_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": project,
        "METERLINE_EVENTS_TOPIC": "events",
        "METERLINE_BIGQUERY_DATASET": dataset,
        "NO_PROXY": "127.0.0.1,localhost",
    }
    # A secret only where Terraform mounts it (terraform/functions.tf): the portal's signing key.
    portal_env = {**function_env, "METERLINE_PORTAL_SIGNING_KEY": f"compat-portal-key-{uuid.uuid4().hex}"}
    servers: list[LocalServer] = []
    router: Router | None = None
    with env(**emulators):
        settings = Settings(backend="gcp", google_cloud_project=project, bigquery_dataset=dataset)
        warehouse = BigQueryWarehouse(bigquery_client(settings), project, dataset)
        warehouse.ensure_schema()
        store = firestore_client(settings)
        api_key = create_api_key(FirestoreApiKeyStore(store), "lago-compat", now_us())
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(project, "events")
        publisher.create_topic(name=topic)
        try:
            servers.append(start_function("functions/ingest/main.py", "ingest", function_env))
            servers.append(start_function("functions/process/main.py", "process", function_env, signature_type="cloudevent"))
            servers.append(start_function("functions/admin/main.py", "admin", function_env))
            servers.append(start_function("functions/portal/main.py", "portal", portal_env))
            ingest, process, admin, portal = servers
            subscriber.create_subscription(request={
                "name": subscriber.subscription_path(project, "process"),
                "topic": topic,
                "push_config": {"push_endpoint": f"http://{HOST}:{process.port}/projects/{project}/topics/events"},
                "ack_deadline_seconds": 60,
            })
            # As the load balancer routes (public_only): no route reaches bill.
            router = start_router({"ingest": ingest.url, "admin": admin.url, "portal": portal.url}, public_only=True)
            yield Target("gcp", router.url, api_key, FirestoreCatalogStore(store), lambda: warehouse)
        finally:
            if router is not None:
                router.stop()
            for server in reversed(servers):
                server.stop()
            with contextlib.suppress(Exception):
                subscriber.close()


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def find_event(lago, transaction_id: str, subscription: str, seconds: float = 60):
    """The event through the client's find, once counted: events are counted asynchronously
    (queue or Pub/Sub, then process), and find answers 404 until then."""
    from lago_python_client.exceptions import LagoApiError

    deadline = time.monotonic() + seconds
    while True:
        try:
            return lago.events.find(transaction_id, {"external_subscription_id": subscription})
        except LagoApiError as exc:
            if exc.status_code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
