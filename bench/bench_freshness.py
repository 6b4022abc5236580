"""Benchmark: freshness, the time from an ingest 200 to the event being visible in current_usage.

    python bench/bench_freshness.py [--events N] [--rate R] [--embedded-only]

One thread posts N events (one per request) at a steady R per second to ingest; another asks
`GET /api/v1/customers/{id}/current_usage` back to back. The k-th acknowledged event counts as
visible at the first current_usage answer, received after its 200, that counts at least k
events: what a customer watching the page sees (events may be counted out of order on Pub/Sub,
so this is "k events visible", exact as a definition). The poll's own duration is part of each
figure: it is the page's resolution too. p50 and p99 over all N events.

Two stacks:
  embedded  `meterline serve` in a subprocess (SQLite queue, its worker, DuckDB)
  emulators the ingest, process and portal Cloud Functions under functions-framework, on the
            Pub/Sub (push) and Firestore emulators and bqemulator

Standalone, it starts the emulators itself; `bench/run.py` calls `run_freshness_bench` with
emulators it has already started. `stack(...)` is also what tests/compat uses to reach the
portal function on the emulators.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (str(REPO_ROOT), str(BENCH_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from infra.servers import HOST, _free_port, environ, start_function, wait_healthy  # noqa: E402

P99_TARGET_S = 2.0  # the embedded backend's target (issue 11; Lago's published event-to-billable figure)
DEFAULT_EVENTS = 1000
DEFAULT_RATE = 50.0  # events/s on the embedded backend: 1,000 events in 20 s
# NOTE: the Pub/Sub emulator pushes at most one or two messages at a time (measured: 2 in
# flight at most), and process takes about 85 ms per one-event message there (a Firestore
# transaction, a bqemulator insert, the done marks), so it drains about 12 messages/s. Above
# that a backlog grows and the figure measures the queue, not freshness; real Pub/Sub raises
# push concurrency with the load. The emulators are driven below that capacity.
DEFAULT_EMULATOR_RATE = 8.0  # events/s: 1,000 events in 125 s
CUSTOMER, SUBSCRIPTION, METRIC, PLAN = "fresh-customer", "fresh-sub", "fresh_requests", "fresh_plan"
SIGNING_KEY = "bench-portal-signing-key-" + "0" * 16


@dataclass
class Stack:
    """A running Meterline: where ingest and the portal answer, a key, and its catalog store."""

    name: str
    ingest_url: str
    portal_url: str
    api_key: str
    catalog: Any
    notes: dict[str, str] = field(default_factory=dict)


def seed(catalog, customer: str = CUSTOMER, subscription: str = SUBSCRIPTION) -> None:
    """A count metric, a plan charging 0.001 per request, one customer subscribed since last month."""
    from meterline.services.admin import AdminService

    admin = AdminService(catalog)
    if catalog.get_billable_metric(METRIC) is None:
        admin.create_billable_metric({"name": "Requests", "code": METRIC, "aggregation_type": "count_agg"})
    if catalog.get_plan(PLAN) is None:
        admin.create_plan({"name": "Fresh", "code": PLAN, "interval": "monthly", "amount_cents": 0,
                           "amount_currency": "USD", "pay_in_advance": False,
                           "charges": [{"billable_metric_code": METRIC, "charge_model": "standard",
                                        "properties": {"amount": "0.001"}}]})
    admin.upsert_customer({"external_id": customer, "name": "Fresh Co", "currency": "USD", "timezone": "UTC"})
    admin.create_subscription({"external_id": subscription, "external_customer_id": customer, "plan_code": PLAN,
                               "subscription_at": (datetime.now(UTC) - timedelta(days=40)).isoformat()})


@contextlib.contextmanager
def embedded_stack(data_dir: Path) -> Iterator[Stack]:
    """`meterline serve` in a subprocess; the key and catalog written to its SQLite first."""
    from meterline.adapters.embedded.sqlite import SqliteDatabase
    from meterline.adapters.embedded.sqlite_catalog import SqliteCatalogStore
    from meterline.adapters.embedded.sqlite_keys import SqliteApiKeyStore
    from meterline.core.clock import now_us
    from meterline.services.auth import create_api_key

    db = SqliteDatabase(data_dir / "meterline.sqlite")
    key = create_api_key(SqliteApiKeyStore(db), "freshness", now_us())
    catalog = SqliteCatalogStore(db)
    seed(catalog)
    port = _free_port()
    url = f"http://{HOST}:{port}"
    with open(data_dir / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meterline", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
            env={**os.environ, "METERLINE_BACKEND": "embedded", "NO_PROXY": "127.0.0.1,localhost"},
        )
        try:
            wait_healthy(url, proc)
            yield Stack("embedded", url, url, key, catalog)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


@contextlib.contextmanager
def gcp_stack(emulator_env: dict[str, str], threads: int = 8) -> Iterator[Stack]:
    """The ingest, process (push) and portal functions on the emulators, in a fresh project."""
    from google.cloud import pubsub_v1

    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
    from meterline.adapters.gcp.clients import bigquery_client, firestore_client
    from meterline.adapters.gcp.firestore_catalog import FirestoreCatalogStore
    from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore
    from meterline.config import Settings
    from meterline.core.clock import now_us
    from meterline.services.auth import create_api_key

    run = uuid.uuid4().hex[:8]
    project, dataset = f"fresh-{run}", f"fresh_{run}"
    env = {**emulator_env, "METERLINE_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": project,
           "METERLINE_EVENTS_TOPIC": "events", "METERLINE_BIGQUERY_DATASET": dataset,
           "METERLINE_PORTAL_SIGNING_KEY": SIGNING_KEY, "WORKERS": "1", "THREADS": str(threads),
           "NO_PROXY": "127.0.0.1,localhost"}
    with environ(emulator_env), contextlib.ExitStack() as stack:
        settings = Settings(backend="gcp", google_cloud_project=project, bigquery_dataset=dataset)
        BigQueryWarehouse(bigquery_client(settings), project, dataset).ensure_schema()
        store = firestore_client(settings)
        key = create_api_key(FirestoreApiKeyStore(store), "freshness", now_us())
        catalog = FirestoreCatalogStore(store)
        seed(catalog)
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(project, "events")
        publisher.create_topic(name=topic)
        stack.callback(subscriber.close)
        ingest = stack.enter_context(start_function("functions/ingest/main.py", "ingest", env))
        process = stack.enter_context(start_function("functions/process/main.py", "process", env,
                                                     signature_type="cloudevent"))
        portal = stack.enter_context(start_function("functions/portal/main.py", "portal", env))
        subscriber.create_subscription(request={
            "name": subscriber.subscription_path(project, "process"), "topic": topic,
            "push_config": {"push_endpoint": f"{process.url}/projects/{project}/topics/events"},
            "ack_deadline_seconds": 60,
        })
        yield Stack("emulators", ingest.url, portal.url, key, catalog, {"project": project})


# -- the measurement -----------------------------------------------------------------------------


@dataclass
class FreshnessFigure:
    backend: str
    events: int
    rate: float
    latencies: list[float]  # seconds, one per event
    polls: int
    poll_seconds: list[float]
    posting_seconds: float

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


class _Http:
    """One keep-alive connection (http.client: no proxy, no per-request setup)."""

    def __init__(self, base: str, key: str):
        parts = urlsplit(base)
        self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        self._conn.request(method, path, body=body, headers=self._headers)
        response = self._conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._conn.close()


def run_freshness(stack: Stack, events: int = DEFAULT_EVENTS, rate: float = DEFAULT_RATE, log=print) -> FreshnessFigure:
    path = f"/api/v1/customers/{CUSTOMER}/current_usage?external_subscription_id={SUBSCRIPTION}"
    poller = _Http(stack.portal_url, stack.api_key)

    def counted() -> int:
        status, body = poller.call("GET", path)
        if status != 200:
            raise RuntimeError(f"current_usage answered {status}: {body[:200]!r}")
        usage = orjson.loads(body)["customer_usage"]
        return sum(c["events_count"] for c in usage["charges_usage"] if c["billable_metric"]["code"] == METRIC)

    base = counted()  # a rerun on the same stack starts from what is there
    answers: list[tuple[float, int]] = []  # (received at, events counted)
    poll_seconds: list[float] = []
    done = threading.Event()
    failure: list[BaseException] = []

    def poll() -> None:
        try:
            while not done.is_set():
                sent = time.monotonic()
                n = counted() - base
                received = time.monotonic()
                answers.append((received, n))
                poll_seconds.append(received - sent)
                if n >= events:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            failure.append(exc)

    poll_thread = threading.Thread(target=poll, name="freshness-poll", daemon=True)
    poll_thread.start()
    acked: list[float] = []
    poster = _Http(stack.ingest_url, stack.api_key)
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()
    try:
        for i in range(events):
            due = started + i / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            body = orjson.dumps({"event": {"transaction_id": f"fresh-{run}-{i}", "external_subscription_id": SUBSCRIPTION,
                                           "code": METRIC, "timestamp": int(time.time())}})
            status, answer = poster.call("POST", "/api/v1/events", body)
            if status != 200:
                raise RuntimeError(f"ingest answered {status}: {answer[:200]!r}")
            acked.append(time.monotonic())
        posting = time.monotonic() - started
        poll_thread.join(timeout=120)
    finally:
        done.set()
        poster.close()
    poller.close()
    if failure:
        raise RuntimeError(f"{stack.name}: polling failed: {failure[0]!r}") from failure[0]
    if not answers or answers[-1][1] < events:
        raise RuntimeError(f"{stack.name}: only {answers[-1][1] if answers else 0} of {events} events became visible")
    latencies = []
    j = 0
    for k, at in enumerate(acked):  # answers are in time order, and their counts never fall
        while answers[j][0] < at or answers[j][1] < k + 1:
            j += 1
        latencies.append(answers[j][0] - at)
    figure = FreshnessFigure(stack.name, events, rate, latencies, len(answers), poll_seconds, posting)
    log(f"  freshness on {stack.name:9s}: p50 {figure.p50 * 1000:7.0f} ms  p99 {figure.p99 * 1000:7.0f} ms  "
        f"max {max(latencies) * 1000:6.0f} ms  ({events} events at {events / posting:.0f}/s; "
        f"{len(answers)} current_usage answers, median {statistics.median(poll_seconds) * 1000:.0f} ms each)")
    return figure


def run_freshness_bench(emulator_env: dict[str, str] | None, *, events: int = DEFAULT_EVENTS,
                        rate: float = DEFAULT_RATE, emulator_rate: float = DEFAULT_EMULATOR_RATE,
                        log=print) -> list[FreshnessFigure]:
    figures = []
    with tempfile.TemporaryDirectory(prefix="meterline-fresh-") as tmp, embedded_stack(Path(tmp)) as stack:
        figures.append(run_freshness(stack, events, rate, log))
    if emulator_env:
        with gcp_stack(emulator_env) as stack:
            figures.append(run_freshness(stack, events, emulator_rate, log))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="events per second, one per request (embedded)")
    parser.add_argument("--emulator-rate", type=float, default=DEFAULT_EMULATOR_RATE, help="the same, on the emulators")
    parser.add_argument("--embedded-only", action="store_true")
    args = parser.parse_args(argv)
    if args.embedded_only:
        figures = run_freshness_bench(None, events=args.events, rate=args.rate)
    else:
        from infra import servers

        with servers.running(servers.start_pubsub_emulator, servers.start_firestore_emulator,
                             servers.start_bigquery_emulator) as (_, emulator_env):
            figures = run_freshness_bench(emulator_env, events=args.events, rate=args.rate,
                                          emulator_rate=args.emulator_rate)
    embedded = figures[0]
    ok = embedded.p99 < P99_TARGET_S
    print(f"{'PASS' if ok else 'FAIL'}  embedded p99 {embedded.p99:.3f} s, target < {P99_TARGET_S:g} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
