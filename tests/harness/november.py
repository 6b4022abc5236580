"""The first customer's November 2026: the events and the invoice they must make.

On the example catalog (shared/meterline/local/example_catalog.yaml), calendar billing, the
customer in UTC, 30 days: 49 USD base fee in arrears, 20 USD per seat prorated by day, and
graduated token prices for input (0.000003 up to 10M, then 0.0000025) and output (0.000015 up
to 10M, then 0.0000125). The pricing pipeline, the billing run, the usage service, the portal
and the Stripe end-to-end tests all bill these events.
"""

from __future__ import annotations

from datetime import UTC, datetime

NOV = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86_400
T = int(NOV.timestamp())


def tokens(tx, at, value, token_type=None):
    props = {"value": value, "model": "gpt-4o"}
    if token_type:
        props["token_type"] = token_type
    return {"transaction_id": tx, "external_subscription_id": "sub_acme", "code": "tokens_consumed",
            "timestamp": at, "properties": props}


def seat(tx, at, user, op="add"):
    return {"transaction_id": tx, "external_subscription_id": "sub_acme", "code": "seats",
            "timestamp": at, "properties": {"user_id": user, "operation_type": op}}


EVENTS = [
    seat("s1", T - 20 * DAY, "alice"),  # added in October: a full month in November
    seat("s2", T + 15 * DAY, "bob"),  # added on November 16: 15 of 30 days
    tokens("t1", T + 1 * DAY, 3_000_000, "input"),
    tokens("t2", T + 2 * DAY, "1000000", "input"),
    tokens("t3", T + 3 * DAY, 8_000_000, "output"),
    tokens("t4", T + 4 * DAY, 4_000_000, "output"),  # crosses the 10M output tier
    tokens("t5", T + 5 * DAY, 1_000_000),  # no token_type: the charge's own ranges
    tokens("t6", T + 31 * DAY, 9_999_999, "output"),  # December: not in this invoice
]

EXPECTED = {
    "subscription:None": 4900,  # base fee, full month in arrears
    "seats:None": 3000,  # alice 20.00 + bob 15/30 x 20.00 = 10.00
    "tokens_consumed:token_type=input": 1200,  # 4M x 0.000003
    "tokens_consumed:token_type=output": 17500,  # 10M x 0.000015 + 2M x 0.0000125
    "tokens_consumed:None": 300,  # 1M x 0.000003
    "total": 26900,
}
