"""`meterline demo`: two months of an LLM gateway's traffic, counted exactly, then billed.

It posts a realistic stream through the real HTTP API (batches and single events, client
retries of whole requests, events repeated across requests, a buggy reuse of a
transaction_id, an invalid batch), for three customers on the first customer's hybrid plan
(seats, some added or removed mid-month, plus graduated input and output tokens). Then it
runs the billing run at the start of each month, posts one event late, after its month's
invoice was finalized, and shows the invoices: the late event is on the next invoice, as its
own line. Tables on stdout; the invoices also go to CSV and JSON files whose paths it prints
(finance's export: `local/exports.py`).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from meterline import logs
from meterline.config import Settings
from meterline.core import reports
from meterline.core.clock import now_us
from meterline.local import exports, output, reporting
from meterline.local.datadir import LOCK_FILE, hold_warehouse
from meterline.local.server import MeterlineServer
from meterline.runtime import LocalRuntime, build_runtime
from meterline.services import catalog_apply
from meterline.services.auth import create_api_key

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


def months(now: datetime) -> tuple[datetime, datetime, datetime]:
    """The starts of the month before last, of last month and of this month (UTC)."""
    this = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last = (this - timedelta(days=1)).replace(day=1)
    return (last - timedelta(days=1)).replace(day=1), last, this


def generate(n_events: int, seed: int, first: datetime, end: datetime) -> list[dict]:
    """Token events spread evenly over [first, end)."""
    rng = random.Random(seed)
    start, span = int(first.timestamp()), int((end - first).total_seconds())
    events = []
    for i in range(n_events):
        sub = rng.choices(SUBSCRIPTIONS, weights=(6, 3, 1))[0]
        events.append({
            "transaction_id": f"req_{seed}_{i:07d}_{rng.choice(('in', 'out'))}",
            "external_subscription_id": sub,
            "code": "tokens_consumed",
            "timestamp": start + i * span // max(n_events, 1),
            "properties": {"value": rng.randint(20, 4000), "model": rng.choice(MODELS),
                           "token_type": rng.choice(("input", "output"))},
        })
    return events


def seat_events(seed: int, first: datetime, second: datetime) -> list[dict]:
    """Each customer's seats: 2-5 from the first day; in the second month one customer adds
    a seat and another removes one (prorated by day on the invoice)."""
    rng = random.Random(seed + 2)
    events = []

    def seat(sub: str, user: str, at: datetime, op: str) -> dict:
        return {"transaction_id": f"seat_{seed}_{sub}_{user}_{op}", "external_subscription_id": sub, "code": "seats",
                "timestamp": int(at.timestamp()), "properties": {"user_id": user, "operation_type": op}}

    for sub in SUBSCRIPTIONS:
        events += [seat(sub, f"user_{u}@{sub}", first, "add") for u in range(rng.randint(2, 5))]
    events.append(seat(SUBSCRIPTIONS[0], f"new_hire@{SUBSCRIPTIONS[0]}", second + timedelta(days=10), "add"))
    events.append(seat(SUBSCRIPTIONS[1], f"user_0@{SUBSCRIPTIONS[1]}", second + timedelta(days=20), "remove"))
    return events


def setup(runtime: LocalRuntime, url: str, key: str, first: datetime) -> None:
    """The catalog from git, then customers and subscriptions through the admin API."""
    catalog = catalog_apply.load(CATALOG)
    store = runtime.adapters.catalog
    catalog_apply.apply(store, catalog, catalog_apply.plan_changes(store, catalog))
    (plan,) = catalog.plans
    for sub in SUBSCRIPTIONS:
        customer = sub.removeprefix("sub_")
        for path, body in (
            ("customers", {"customer": {"external_id": customer, "name": customer.title(), "currency": "USD", "timezone": "UTC"}}),
            ("subscriptions", {"subscription": {"external_id": sub, "external_customer_id": customer,
                                                "plan_code": plan.code, "subscription_at": first.isoformat()}}),
        ):
            status, answer = _post(f"{url}/api/v1/{path}", key, body)
            if status != 200:
                raise SystemExit(f"demo: {path}: unexpected {status} {answer}")


def bill(runtime: LocalRuntime, as_of: datetime, fmt: str) -> None:
    result = runtime.bill.billing.run(as_of)
    print(f"billing run as of {as_of:%Y-%m-%d %H:%M} UTC: {result.drafted} drafted, {result.finalized} finalized"
          + (f", FAILED: {result.failed}" if result.failed else ""))


def show_invoices(runtime: LocalRuntime, data_dir: Path, fmt: str) -> None:
    invoices = sorted(runtime.adapters.invoices.list()[0], key=lambda i: (i.period_start, i.subscription_external_id))
    details = runtime.admin.invoices.details(invoices)
    rows, lines = exports.invoice_rows(details), exports.line_rows(details)
    print("\nInvoices")
    print(output.render(rows, ["invoice_number", "external_subscription_id", "period_start", "period_end", "status",
                               "currency", "total"], fmt))
    print("\nInvoice lines")
    print(output.render(lines, ["invoice_number", "description", "units", "unit_price", "amount"], fmt))
    written = [p for name in ("invoices.csv", "invoices.json") for p in exports.write(details, data_dir / name)]
    print("\nwritten: " + ", ".join(str(p) for p in written))


# What finance asks after a month closes: what was invoiced, and whether it matches the usage
# and what the payment provider says (docs/reports.md).
FINANCE_REPORTS = ("revenue", "reconciliation")


def show_reports(runtime: LocalRuntime, fmt: str) -> None:
    """The finance reports of each month the demo issued invoices in, as `meterline report`
    prints them, run on the warehouse the demo holds."""
    issued = sorted({reports.month_of(i.issuing_date) for i in runtime.adapters.invoices.list()[0]})
    for name in FINANCE_REPORTS:
        for month in issued:
            print(f"\n{name} report, {month.label} (meterline report {name} --month {month.label})")
            print(reporting.report_text(name, reporting.report_rows(runtime.adapters, name, month), fmt))
    if runtime.adapters.payment_provider is None:
        print("\nNo Stripe key in this demo: no invoice was sent to Stripe or paid, so reconciliation flags each "
              "provider_missing and unpaid_overdue; late_usage marks the invoice whose usage grew after it was finalized.")


def run(n_events: int = 3000, data_dir: Path = Path(".meterline/demo"), seed: int = 7, fmt: str = "table") -> int:
    # The demo starts from an empty data dir; the lock first, so that it never wipes a dir a
    # `meterline serve` is using (DataDirBusy says who holds it).
    with hold_warehouse(data_dir, "meterline demo"):
        for entry in data_dir.iterdir():
            if entry.name != LOCK_FILE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        return _run(n_events, data_dir, seed, fmt)


def _run(n_events: int, data_dir: Path, seed: int, fmt: str) -> int:
    logs.set_level(logging.WARNING)  # the demo draws its own progress; the workers' INFO lines would break it
    runtime = build_runtime(Settings(backend="embedded", data_dir=data_dir))
    key = create_api_key(runtime.adapters.api_keys, "demo-gateway", now_us())
    rng = random.Random(seed + 1)
    truth = Truth()
    first, second, this = months(datetime.now(UTC))
    events = generate(n_events, seed, first, this)
    progress = output.Progress("posting events", len(events))
    with MeterlineServer(runtime) as server:
        setup(runtime, server.url, key, first)
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
        status, answer = _post(f"{base}/batch", key, {"events": seat_events(seed, first, second)})
        if status != 200:
            raise SystemExit(f"demo: unexpected {status} {answer}")
        # A client's mistakes are refused whole, with the field named; nothing is counted.
        bad = {"events": [events[0], {**events[1], "timestamp": "yesterday"}]}
        status, answer = _post(f"{base}/batch", key, bad)
        truth.invalid_requests += 1
        print(f"an invalid batch is refused whole: {status} {orjson.dumps(answer['error_details']).decode()}")
        wait_for_queue(runtime)
        # The first month closes: its invoices, finalized after the one-hour grace period.
        bill(runtime, second + timedelta(hours=2), fmt)
        # A gateway that was offline sends one event of the first month now: it is counted,
        # and billed on the next invoice as late usage, the finalized one left as it is.
        late = {**events[len(events) // 4], "transaction_id": f"late_{seed}", "properties": {
            "value": 1_000_000, "model": MODELS[0], "token_type": "output"}}
        status, answer = _post(base, key, {"event": late})
        if status != 200:
            raise SystemExit(f"demo: unexpected {status} {answer}")
        truth.posted[late["external_subscription_id"]] += 1
        truth.unique[late["external_subscription_id"]][late["transaction_id"]] = 1_000_000
        print(f"one late event for {late['external_subscription_id']} in {first:%B}, after its invoice was finalized")
        wait_for_queue(runtime)
        bill(runtime, this + timedelta(hours=2), fmt)
    counted = {
        t.external_subscription_id: {"events": t.events, "tokens": t.total}
        for t in runtime.adapters.warehouse.totals("tokens_consumed", "value")
    }
    rejected = runtime.adapters.warehouse.count_rejected()
    table, ok = [], True
    for sub in SUBSCRIPTIONS:
        expected_events = len(truth.unique[sub])
        expected_tokens = sum(truth.unique[sub].values())
        got: dict[str, Any] = counted.get(sub, {"events": 0, "tokens": Decimal(0)})
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
    show_invoices(runtime, data_dir, fmt)
    show_reports(runtime, fmt)
    return 0 if ok else 1


def wait_for_queue(runtime: LocalRuntime, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while runtime.queue.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
