"""Benchmark: the process service (dedup claim + warehouse insert), events/s.

    python bench/bench_process.py [--threads N] [--messages N]

It calls `ProcessService.handle_message` directly on pre-encoded messages of 100 events
(`meterline.services.ingest.encode_message`, exactly what ingest publishes), from a few threads, as
concurrent push deliveries would. Two backends: the emulators (Firestore + bqemulator), and
the embedded adapters (SQLite + DuckDB) for comparison. Every event is new, so each message
costs one create-only Firestore transaction of 100 creates and one streaming insert of 100
rows. The count in `events_deduped` is checked afterwards.

Standalone, it starts the emulators itself; `bench/run.py` calls `run_process_bench`.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (str(REPO_ROOT), str(BENCH_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench_ingest import BASE_TS  # noqa: E402

from infra.servers import environ  # noqa: E402

DEFAULT_THREADS = 8
DEFAULT_MESSAGES = 120  # x 100 events; bounded further by max_seconds


@dataclass
class ProcessFigure:
    backend: str
    threads: int
    messages: int
    events: int
    seconds: float
    cpu_seconds: float  # of this process (the service's Python side; the emulators are separate)
    counted: int  # rows in events_deduped afterwards

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def make_messages(count: int, run: str, per_message: int = 100) -> list[bytes]:
    from meterline.core.clock import now_us
    from meterline.core.events import validate_event
    from meterline.core.messages import encode_message

    received = now_us()
    messages = []
    for m in range(count):
        events = [
            validate_event(
                {
                    "transaction_id": f"{run}-{m}-{i}",
                    "external_subscription_id": f"sub-{i % 50}",
                    "code": "tokens_consumed",
                    "timestamp": BASE_TS + m * per_message + i,
                    "properties": {"tokens": str(100 + i), "model": "gpt-4o"},
                },
                received,
            )
            for i in range(per_message)
        ]
        messages.append(encode_message(events))
    return messages


def drive(service, messages: list[bytes], threads: int, max_seconds: float) -> tuple[int, int, float, float]:
    """Handle the messages from `threads` threads; returns (messages, events inserted, seconds, cpu s)."""
    work: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    for m in messages:
        work.put(m)
    done = {"messages": 0, "events": 0}
    errors: list[BaseException] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            try:
                data = work.get_nowait()
            except queue.Empty:
                return
            try:
                result = service.handle_message(data)
            except BaseException as exc:  # noqa: BLE001 - reported below, the run is void
                errors.append(exc)
                return
            with lock:
                done["messages"] += 1
                done["events"] += result.inserted

    started, cpu_started = time.perf_counter(), time.process_time()
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(max_seconds + 120)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if errors:
        raise RuntimeError(f"process failed: {errors[0]!r}") from errors[0]
    return done["messages"], done["events"], seconds, cpu


def _count(warehouse) -> int:
    return sum(t.events for t in warehouse.totals("tokens_consumed", "tokens"))


def run_process_bench(emulator_env: dict[str, str] | None, *, threads: int = DEFAULT_THREADS,
                      messages: int = DEFAULT_MESSAGES, max_seconds: float = 30.0, log=print) -> list[ProcessFigure]:
    from meterline.config import Settings
    from meterline.runtime import build_runtime
    from meterline.services.process import ProcessService

    figures = []
    backends = ["gcp", "embedded"] if emulator_env else ["embedded"]
    for backend in backends:
        run = uuid.uuid4().hex[:8]
        payload = make_messages(messages, run)
        with tempfile.TemporaryDirectory(prefix="meterline-bench-") as tmp, environ(emulator_env or {}):
            if backend == "gcp":
                from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse
                from meterline.adapters.gcp.clients import bigquery_client, firestore_client
                from meterline.adapters.gcp.firestore_dedup import FirestoreDedupStore

                settings = Settings(backend="gcp", google_cloud_project=f"bench-{run}", bigquery_dataset=f"bench_{run}")
                warehouse = BigQueryWarehouse(bigquery_client(settings), settings.google_cloud_project,
                                              settings.bigquery_dataset)
                warehouse.ensure_schema()
                service = ProcessService(FirestoreDedupStore(firestore_client(settings)), warehouse)
            else:
                runtime = build_runtime(Settings(backend="embedded", data_dir=Path(tmp)))
                warehouse = runtime.adapters.warehouse
                service = runtime.process.service
            service.handle_message(make_messages(1, f"warm-{run}")[0])  # connections, schema caches
            handled, events, seconds, cpu = drive(service, payload, threads, max_seconds)
            counted = _count(warehouse) - 100
            if counted != events:
                raise RuntimeError(f"{backend}: {events} events inserted but {counted} counted in events_deduped")
            figure = ProcessFigure(backend, threads, handled, events, seconds, cpu, counted)
            figures.append(figure)
            log(f"  process on {backend:8s}: {figure.events_per_s:9,.0f} events/s ({handled} messages x 100, "
                f"{threads} threads, {seconds:.1f} s, this process {cpu / seconds:.2f} cores)")
            if backend == "embedded":
                runtime.adapters.warehouse.close()  # DuckDB holds the file until closed
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument("--embedded-only", action="store_true")
    args = parser.parse_args(argv)
    if args.embedded_only:
        run_process_bench(None, threads=args.threads, messages=args.messages)
        return 0

    from infra import servers

    with servers.running(servers.start_firestore_emulator, servers.start_bigquery_emulator) as (_, emulator_env):
        run_process_bench(emulator_env, threads=args.threads, messages=args.messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
