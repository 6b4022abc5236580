"""`meterline demo`: an LLM gateway's day of traffic, posted through the real HTTP API.

It posts a realistic stream (batches and single events, client retries of whole requests,
events repeated across requests, a buggy reuse of a transaction_id, a few invalid requests),
lets the pipeline dedup and store it, then compares what was counted with the ground truth.
"""

from __future__ import annotations

import random
import shutil
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson

from meterline.config import Settings
from meterline.core.clock import now_us
from meterline.local import output
from meterline.local.datadir import LOCK_FILE, hold_warehouse
from meterline.local.server import LocalServer
from meterline.runtime import LocalRuntime, build_runtime
from meterline.services import catalog_apply
from meterline.services.auth import create_api_key
from meterline.services.usage import UsageService

# The first customer's catalog (seats + graduated tokens), kept in git beside the code.
CATALOG = Path(__file__).resolve().with_name("example_catalog.yaml")  # shipped in the package

SUBSCRIPTIONS = ("sub_acme_prod", "sub_globex_prod", "sub_initech_trial")
MODELS = ("gpt-4o", "claude-sonnet", "llama-70b")


@dataclass
class Truth:
    unique: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))  # sub -> txn -> tokens
    posted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    conflicts: int = 0
    invalid_requests: int = 0


def _post(url: str, key: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=orjson.dumps(body), method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def generate(n_events: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    start = int(time.time()) - 86_400
    events = []
    for i in range(n_events):
        sub = rng.choices(SUBSCRIPTIONS, weights=(6, 3, 1))[0]
        events.append({
            "transaction_id": f"req_{seed}_{i:07d}_{rng.choice(('in', 'out'))}",
            "external_subscription_id": sub,
            "code": "tokens_consumed",
            "timestamp": start + i * 86_400 // max(n_events, 1),
            "properties": {"value": rng.randint(20, 4000), "model": rng.choice(MODELS),
                           "token_type": rng.choice(("input", "output"))},
        })
    return events


def seat_events(seed: int) -> list[dict]:
    """Each customer's seats: some carried over from last month, some added this month."""
    rng = random.Random(seed + 2)
    now = int(time.time())
    events = []
    for s, sub in enumerate(SUBSCRIPTIONS):
        for u in range(rng.randint(2, 6)):
            # Two thirds of the seats existed before this period; the rest were added lately.
            at = now - 40 * 86_400 if rng.random() < 0.66 else now - rng.randint(1, 20) * 86_400
            events.append({"transaction_id": f"seat_{seed}_{s}_{u}", "external_subscription_id": sub, "code": "seats",
                           "timestamp": at, "properties": {"user_id": f"user_{u}@{sub}", "operation_type": "add"}})
    return events


def price_preview(runtime: LocalRuntime, fmt: str) -> None:
    """What each subscription owes so far this period on the example plan, through the same
    admin API calls a client makes and the usage service billing uses."""
    catalog = catalog_apply.load(CATALOG)
    store = runtime.adapters.catalog
    catalog_apply.apply(store, catalog, catalog_apply.plan_changes(store, catalog))
    (plan,) = catalog.plans
    admin = runtime.admin.service
    subscriptions = []
    for sub in SUBSCRIPTIONS:
        customer = admin.upsert_customer({"external_id": sub.removeprefix("sub_"), "name": sub, "currency": "USD", "timezone": "UTC"})
        subscriptions.append(admin.create_subscription({
            "external_id": sub, "external_customer_id": customer.external_id, "plan_code": plan.code,
            "subscription_at": "2026-01-01T00:00:00Z"}))
    usage = UsageService(store, runtime.adapters.warehouse)
    rows = []
    for rated in usage.current(subscriptions, datetime.now(timezone.utc)):  # one query for every subscription
        period, draft = rated.period, rated.draft
        by_line = {f.display_name: f.amount for f in draft.fees}
        rows.append({"subscription": rated.subscription.external_id, "period": f"{period.start_date}..{period.end_date}",
                     **by_line, "total_usd": draft.amount})
    columns = ["subscription", "period", *[k for k in rows[0] if k not in ("subscription", "period", "total_usd")], "total_usd"]
    print(f"\nWhat each subscription owes so far on plan {plan.code!r} (meterline/local/example_catalog.yaml):")
    print(output.render(rows, columns, fmt))


def run(n_events: int = 3000, data_dir: Path = Path(".meterline/demo"), seed: int = 7, fmt: str = "table") -> int:
    # The demo starts from an empty data dir; the lock first, so that it never wipes a dir a
    # `meterline serve` is using (DataDirBusy says who holds it).
    with hold_warehouse(data_dir, "meterline demo"):
        for entry in data_dir.iterdir():
            if entry.name != LOCK_FILE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return _run(n_events, data_dir, seed, fmt)


def _run(n_events: int, data_dir: Path, seed: int, fmt: str) -> int:
    runtime = build_runtime(Settings(backend="embedded", data_dir=data_dir))
    key = create_api_key(runtime.adapters.api_keys, "demo-gateway", now_us())
    rng = random.Random(seed + 1)
    truth = Truth()
    events = generate(n_events, seed)
    progress = output.Progress("posting events", len(events))
    with LocalServer(runtime) as server:
        base = f"{server.url}/api/v1/events"
        i = 0
        while i < len(events):
            size = 1 if rng.random() < 0.3 else rng.randint(2, 100)
            chunk = events[i : i + size]
            i += size
            # A gateway sometimes re-sends an event it already sent in an earlier request.
            if rng.random() < 0.08 and i > 200:
                chunk = chunk + [events[rng.randrange(0, i - size)]]
            # A buggy gateway reuses a transaction_id with other properties: the first one wins.
            if rng.random() < 0.04 and i > 200:
                reused = dict(events[rng.randrange(0, i - size)])
                reused["properties"] = {**reused["properties"], "value": reused["properties"]["value"] + 1}
                chunk = chunk + [reused]
                truth.conflicts += 1
            body, url = ({"event": chunk[0]}, base) if len(chunk) == 1 else ({"events": chunk}, f"{base}/batch")
            status, answer = _post(url, key, body)
            if status != 200:
                raise SystemExit(f"demo: unexpected {status} {answer}")
            # The gateway's timeout fired before it read the answer: it retries the whole request.
            if rng.random() < 0.1:
                _post(url, key, body)
                for e in chunk:
                    truth.posted[e["external_subscription_id"]] += 1
            for e in chunk:
                truth.posted[e["external_subscription_id"]] += 1
                truth.unique[e["external_subscription_id"]].setdefault(e["transaction_id"], e["properties"]["value"])
            progress.advance(min(size, len(events) - (i - size)))
        progress.finish()
        status, answer = _post(f"{base}/batch", key, {"events": seat_events(seed)})
        if status != 200:
            raise SystemExit(f"demo: unexpected {status} {answer}")
        # A client's mistakes are refused whole, with the field named; nothing is counted.
        bad = {"events": [events[0], {**events[1], "timestamp": "yesterday"}]}
        status, answer = _post(f"{base}/batch", key, bad)
        truth.invalid_requests += 1
        print(f"an invalid batch is refused whole: {status} {orjson.dumps(answer['error_details']).decode()}")
        deadline = time.monotonic() + 60
        while runtime.queue.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
    counted = {
        t.external_subscription_id: {"events": t.events, "tokens": t.total}
        for t in runtime.adapters.warehouse.totals("tokens_consumed", "value")
    }
    rejected = runtime.adapters.warehouse.count_rejected()
    table, ok = [], True
    for sub in SUBSCRIPTIONS:
        expected_events = len(truth.unique[sub])
        expected_tokens = sum(truth.unique[sub].values())
        got = counted.get(sub, {"events": 0, "tokens": Decimal(0)})
        match = got["events"] == expected_events and Decimal(got["tokens"] or 0) == expected_tokens
        ok &= match
        table.append({
            "subscription": sub, "posted": truth.posted[sub], "unique": expected_events,
            "counted": got["events"], "tokens_expected": expected_tokens,
            "tokens_counted": Decimal(got["tokens"] or 0).normalize(), "exact": "yes" if match else "NO",
        })
    print(output.render(table, ["subscription", "posted", "unique", "counted", "tokens_expected", "tokens_counted", "exact"], fmt))
    print(f"transaction_id reused with another payload: {truth.conflicts} sent, {rejected} in rejected_events")
    ok &= rejected == truth.conflicts
    print("every event counted exactly once" if ok else "MISMATCH: see the table above")
    price_preview(runtime, fmt)
    return 0 if ok else 1
