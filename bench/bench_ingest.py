"""Benchmark: the ingest function under functions-framework, against a no-op function.

    python bench/bench_ingest.py [--threads N] [--connections N] [--duration S]

Both functions are served by the real `functions-framework` (gunicorn, gthread worker) with
WORKERS=1, i.e. one Python process: "per core" below means one server process, whose CPU
time is measured from /proc and printed beside each figure. Ingest runs with
METERLINE_BACKEND=gcp against the Pub/Sub and Firestore emulators, so every 200 means Pub/Sub
confirmed the publish (see meterline.services.ingest). The load comes from bench/loadgen.py, in
processes of its own, over keep-alive connections.

Standalone, it starts the emulators itself; `bench/run.py` calls `run_ingest_bench` with
emulators it has already started.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (str(REPO_ROOT), str(BENCH_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from loadgen import HOST, LoadResult, LoadSpec, run_load  # noqa: E402

from infra.servers import LocalServer, environ  # noqa: E402
from infra.servers import start_function as _start_function  # noqa: E402

BASE_TS = 1_767_225_600  # 2026-01-01T00:00:00Z
TOPIC = "bench-events"
DEFAULT_THREADS = 32
DEFAULT_CONNECTIONS = 64
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# functions-framework servers
# ---------------------------------------------------------------------------


def start_function(name: str, source: Path, target: str, env: dict[str, str], threads: int) -> LocalServer:
    """One function under functions-framework with one worker: "per core" is one server process."""
    return _start_function(
        source, target, {**env, "WORKERS": "1", "THREADS": str(threads), "NO_PROXY": "127.0.0.1,localhost"}, name=name
    )


# ---------------------------------------------------------------------------
# CPU time per process group, from /proc
# ---------------------------------------------------------------------------


def group_cpu_seconds(pgids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by every live process of each group, and the machine."""
    totals = {name: 0.0 for name in pgids}
    by_pgid = {pgid: name for name, pgid in pgids.items()}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # it ended meanwhile
        name = by_pgid.get(int(fields[2]))  # fields[0] is the state: pgrp is the 5th field of stat
        if name is not None:
            totals[name] += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    totals["machine"] = (sum(cpu) - cpu[3] - cpu[4]) / _CLK_TCK  # all but idle and iowait
    totals["wall"] = time.monotonic()
    return totals


def cpu_shares(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Cores used by each group over the interval (1.0 = one core fully busy)."""
    wall = after["wall"] - before["wall"]
    return {k: (after[k] - before[k]) / wall for k in before if k != "wall"}


# ---------------------------------------------------------------------------
# Workload
# ---------------------------------------------------------------------------


def _event(run: str, i: int) -> dict:
    # ~170 bytes, like a gateway's token event: a decimal string, a model name, an integer timestamp.
    return {
        "transaction_id": f"{run}-{i}",
        "external_subscription_id": f"sub-{i % 50}",
        "code": "tokens_consumed",
        "timestamp": BASE_TS + i,
        "properties": {"tokens": str(100 + i % 9000), "model": "gpt-4o", "region": "eu"},
    }


def single_bodies(count: int, run: str) -> tuple[bytes, ...]:
    return tuple(json.dumps({"event": _event(run, i)}).encode() for i in range(count))


def batch_bodies(count: int, size: int, run: str) -> tuple[bytes, ...]:
    return tuple(json.dumps({"events": [_event(run, b * size + i) for i in range(size)]}).encode() for b in range(count))


@dataclass
class Phase:
    name: str
    server: str
    events_per_request: int
    result: LoadResult
    cpu: dict[str, float] = field(default_factory=dict)
    round: int = 1

    @property
    def requests_per_s(self) -> float:
        return self.result.rate

    @property
    def events_per_s(self) -> float:
        return self.result.rate * self.events_per_request

    @property
    def server_cpu_us_per_request(self) -> float:
        return self.cpu.get("server", 0.0) / self.requests_per_s * 1e6 if self.requests_per_s else 0.0

    @property
    def events_per_server_cpu_s(self) -> float:
        busy = self.cpu.get("server", 0.0)
        return self.events_per_s / busy if busy else 0.0


def _check(server: LocalServer, path: str, body: bytes, headers: dict[str, str]) -> dict:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"{server.name} answered {response.status} to {path}: {raw[:300]!r}\n{server.log_tail()}")
    return json.loads(raw)


def prepare_gcp(emulator_env: dict[str, str], project: str) -> str:
    """Create the topic (with a pull subscription, as in production) and an API key; return the key."""
    with environ(emulator_env):
        from google.cloud import pubsub_v1

        from meterline.adapters.gcp.clients import firestore_client
        from meterline.adapters.gcp.firestore_keys import FirestoreApiKeyStore
        from meterline.config import Settings
        from meterline.core.clock import now_us
        from meterline.services.auth import create_api_key

        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topic = publisher.topic_path(project, TOPIC)
        publisher.create_topic(name=topic)
        # A subscription makes the emulator keep every message, as a real topic with `process` does.
        subscriber.create_subscription(name=subscriber.subscription_path(project, "bench-process"), topic=topic)
        subscriber.close()
        settings = Settings(backend="gcp", google_cloud_project=project)
        return create_api_key(FirestoreApiKeyStore(firestore_client(settings)), "bench", now_us())


def run_ingest_bench(emulator_env: dict[str, str], pubsub_pgid: int, *, threads: int = DEFAULT_THREADS,
                     connections: int = DEFAULT_CONNECTIONS, processes: int = 2, duration: float = 5.0,
                     warmup: float = 1.5, emulator_warmup: float = 8.0, rounds: int = 1,
                     diagnose: bool = True, log=print) -> list[Phase]:
    project = f"bench-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:8]
    api_key = prepare_gcp(emulator_env, project)
    auth = (("Authorization", f"Bearer {api_key}"),)
    fn_env = {**emulator_env, "METERLINE_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": project,
              "METERLINE_EVENTS_TOPIC": TOPIC, "METERLINE_BIGQUERY_DATASET": "bench"}
    servers: dict[str, LocalServer] = {}
    try:
        servers["ingest"] = start_function("ingest", REPO_ROOT / "functions/ingest/main.py", "ingest", fn_env, threads)
        servers["noop"] = start_function("noop", BENCH_DIR / "noop/main.py", "noop", {}, threads)
        if diagnose:
            servers["stubbed"] = start_function("stubbed", BENCH_DIR / "ingest_nopublish/main.py", "ingest", fn_env, threads)
        singles = single_bodies(4000, run)
        batches = batch_bodies(200, 100, run)
        # One request of each kind first: the figures below count only real, confirmed answers.
        answer = _check(servers["ingest"], "/api/v1/events", singles[0], dict(auth))
        assert answer["event"]["transaction_id"] == f"{run}-0", answer
        answer = _check(servers["ingest"], "/api/v1/events/batch", batches[0], dict(auth))
        assert len(answer["events"]) == 100, answer
        if diagnose:
            answer = _check(servers["stubbed"], "/api/v1/events/batch", batches[1], dict(auth))
            assert len(answer["events"]) == 100, answer

        # Warm the Pub/Sub emulator's JVM (and the server's caches) first, unmeasured: cold, its
        # JIT compiler takes a third of a core away from the server during the first phases.
        for path, bodies in (("/api/v1/events", singles), ("/api/v1/events/batch", batches)):
            spec = LoadSpec(port=servers["ingest"].port, path=path, bodies=bodies, headers=auth,
                            connections=connections, processes=processes, warmup=0.0, duration=emulator_warmup / 2)
            warm, _, _ = run_load(spec)
            if warm.errors:
                raise RuntimeError(f"warm-up: {warm.errors} failed requests, e.g. {warm.error_sample!r}")
        log(f"  (warmed up the emulator for {emulator_warmup:.0f} s, unmeasured)")

        phases: list[Phase] = []
        plan = [
            ("no-op, 1 event/request", "noop", "/api/v1/events", singles, 1),
            ("ingest, 1 event/request", "ingest", "/api/v1/events", singles, 1),
            ("no-op, 100 events/request", "noop", "/api/v1/events/batch", batches, 100),
            ("ingest, 100 events/request", "ingest", "/api/v1/events/batch", batches, 100),
        ]
        if diagnose:  # the real ingest with publish stubbed: splits ingest's cost (see ingest_nopublish/main.py)
            plan[2:2] = [("ingest, no publish, 1/request", "stubbed", "/api/v1/events", singles, 1)]
            plan.append(("ingest, no publish, 100/req", "stubbed", "/api/v1/events/batch", batches, 100))
        # Rounds interleave the four phases, so that a neighbour's load hits the no-op and the
        # ingest figures alike; run.py reports each phase's median round.
        for round_no in range(1, rounds + 1):
            for name, which, path, bodies, per_request in plan:
                server = servers[which]
                spec = LoadSpec(port=server.port, path=path, bodies=bodies, headers=auth, connections=connections,
                                processes=processes, warmup=warmup, duration=duration)
                groups = {"server": server.pid, "pubsub": pubsub_pgid, "loadgen": os.getpgrp()}
                result, before, after = run_load(spec, probe=lambda g=groups: group_cpu_seconds(g))
                phase = Phase(name, which, per_request, result, cpu_shares(before, after), round_no)
                phases.append(phase)
                log(f"  round {round_no}  {name:28s} {phase.requests_per_s:7,.0f} req/s {phase.events_per_s:9,.0f} events/s"
                    f"  p50 {result.percentile(0.5):6.1f} ms  p99 {result.percentile(0.99):6.1f} ms"
                    f"  server {phase.cpu['server']:.2f} cores, errors {result.errors}")
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} failed requests, e.g. {result.error_sample!r}\n"
                                       f"{server.log_tail()}")
        return phases
    finally:
        for server in servers.values():
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="gunicorn THREADS of each function")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--loadgen-processes", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)

    from infra import servers

    # bqemulator too: the ingest runtime builds every adapter, BigQuery's client included (for GETs).
    with servers.running(servers.start_pubsub_emulator, servers.start_firestore_emulator,
                         servers.start_bigquery_emulator) as (started, emulator_env):
        run_ingest_bench(emulator_env, started[0].pid, threads=args.threads, connections=args.connections,
                         processes=args.loadgen_processes, duration=args.duration, rounds=args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
