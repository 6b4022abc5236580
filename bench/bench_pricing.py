"""Benchmark: rate 10,000 subscriptions of a hybrid AI plan on one core, usage given.

    python bench/bench_pricing.py [--subscriptions N] [--budget SECONDS]

The plan is what an AI SaaS sells: a monthly base fee, seats (a recurring unique_count,
prorated by days from add/remove events) and tokens on a graduated price with separate
input/output filters. Each subscription has its own customer timezone and start date,
and the timed loop finds its billing period and rates it, i.e. everything a billing run does
after aggregation and before persistence. Catalog parsing (pydantic) happens once, outside
the loop, as a billing run would parse each plan once.

Exits non-zero when the loop takes the budget (1 s) or more.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shared"))

from meterline.core.catalog import Customer, Plan, Subscription
from meterline.core.pricing.periods import BillingSchedule, period_containing
from meterline.core.pricing.rating import rate_subscription
from meterline.core.pricing.usage import ChargeUsage, SeatEvent

TIMEZONES = [
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Los_Angeles",
    "Asia/Kolkata",
    "Pacific/Kiritimati",
]
INPUT = "model=gpt-4o;token_type=input"
OUTPUT = "model=gpt-4o;token_type=output"


def _ranges(*rows):
    return [{"from_value": f, "to_value": t, "per_unit_amount": u, "flat_amount": fl} for f, t, u, fl in rows]


PLAN_BODY = {
    "code": "team",
    "name": "Team",
    "interval": "monthly",
    "amount_cents": 4900,
    "amount_currency": "USD",
    "charges": [
        {"billable_metric_code": "seats", "charge_model": "standard", "prorated": True, "properties": {"amount": "20"}},
        {
            "billable_metric_code": "tokens",
            "charge_model": "graduated",
            "properties": {
                "graduated_ranges": _ranges((0, 1_000_000, "0.000002", "0"), (1_000_001, None, "0.000001", "0"))
            },
            "filters": [
                {
                    "invoice_display_name": "Input tokens",
                    "values": {"model": ["gpt-4o"], "token_type": ["input"]},
                    "properties": {
                        "graduated_ranges": _ranges(
                            (0, 1_000_000, "0.0000025", "0"),
                            (1_000_001, 10_000_000, "0.000002", "0"),
                            (10_000_001, None, "0.0000015", "0"),
                        )
                    },
                },
                {
                    "invoice_display_name": "Output tokens",
                    "values": {"model": ["gpt-4o"], "token_type": ["output"]},
                    "properties": {
                        "graduated_ranges": _ranges((0, 1_000_000, "0.00001", "0"), (1_000_001, None, "0.000008", "0"))
                    },
                },
            ],
        },
    ],
}


def build_workload(count: int, seed: int = 7):
    """Subscriptions, customers and usage, built (and validated) before timing starts."""
    rng = random.Random(seed)
    plan = Plan.model_validate(PLAN_BODY)
    month_start = datetime(2024, 4, 1, tzinfo=UTC)
    jobs = []
    for i in range(count):
        customer = Customer(external_id=f"cus_{i}", currency="USD", timezone=rng.choice(TIMEZONES))
        started = month_start - timedelta(days=rng.randint(-20, 400), hours=rng.randint(0, 23))
        subscription = Subscription(
            external_id=f"sub_{i}",
            external_customer_id=customer.external_id,
            plan_code=plan.code,
            billing_time=rng.choice(["calendar", "anniversary"]),
            subscription_at=started,
            started_at=started,
        )
        seats = []
        for s in range(rng.randint(1, 8)):
            added = month_start + timedelta(days=rng.randint(-60, 28), hours=rng.randint(0, 23))
            seats.append(SeatEvent(f"user_{s}", "add", added))
            if rng.random() < 0.2:
                seats.append(SeatEvent(f"user_{s}", "remove", added + timedelta(days=rng.randint(0, 20))))
        usage = {
            ("seats", None): ChargeUsage(seat_events=tuple(seats)),
            ("tokens", INPUT): Decimal(rng.randint(0, 30_000_000)),
            ("tokens", OUTPUT): Decimal(rng.randint(0, 5_000_000)),
        }
        jobs.append((subscription, customer, usage))
    return plan, jobs, month_start + timedelta(days=15)


def run(plan, jobs, instant):
    total_cents = 0
    for subscription, customer, usage in jobs:
        period = period_containing(BillingSchedule.of(subscription, plan, customer), instant)
        total_cents += rate_subscription(subscription, plan, customer, period, usage).amount_cents
    return total_cents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--budget", type=float, default=1.0, help="seconds; exit 1 at or above it")
    args = parser.parse_args(argv)

    plan, jobs, instant = build_workload(args.subscriptions)
    run(plan, jobs[:200], instant)  # warm caches (zoneinfo, decimal contexts)
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    total_cents = run(plan, jobs, instant)
    wall, cpu = time.perf_counter() - wall_started, time.process_time() - cpu_started

    # NOTE: the budget is checked on this process's CPU time: the loop is single-threaded,
    # so CPU time is what it costs on one core, whereas wall time also counts whatever else
    # shares the machine (CI neighbours, other test runs). Both are printed.
    print(
        f"rated {args.subscriptions} subscriptions: {cpu:.3f} s CPU on one core "
        f"({args.subscriptions / cpu:,.0f} subscriptions/s), {wall:.3f} s wall; billed {total_cents / 100:,.2f} USD"
    )
    if cpu >= args.budget:
        print(f"FAIL: {cpu:.3f} s CPU is over the {args.budget:.3f} s budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
