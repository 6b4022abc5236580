"""An invoice and its lines as the invoice store and the finance tables receive them: every
field set, with values at the edges of what a store keeps (more digits than NUMERIC, a
microsecond, a timestamp in another zone)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from meterline.core.invoices import Invoice, InvoiceLine, invoice_id

PARIS = timezone(timedelta(hours=1))
AT = datetime(2026, 2, 1, 1, 0, 0, 123456, tzinfo=UTC)


def line(ref: str = "charge|tokens", cents: int = 1234, **changes: Any) -> InvoiceLine:
    base = InvoiceLine(
        ref=ref,
        kind="charge",
        description="Tokens ([0–1000000] 1234567.123456789 × 0.00002)",
        units=Decimal("1234567.123456789012"),  # more digits than NUMERIC keeps: the store keeps them all
        precise_amount=Decimal("12.34000000012345678901"),
        amount_cents=cents,
        charge_ref="ch_1",
        filter_key="model=gpt-4",
        plan_code="hybrid",
        from_datetime=datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        to_datetime=datetime(2026, 1, 31, 23, 59, 59, 999999, tzinfo=UTC),
        events_count=42,
    )
    return dataclasses.replace(base, **changes)


def invoice(sub: str = "sub-1", customer: str = "cus-1", start: date = date(2026, 1, 1), **changes: Any) -> Invoice:
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1) - timedelta(days=1)
    base = Invoice(
        id=invoice_id(sub, start, end),
        customer_external_id=customer,
        subscription_external_id=sub,
        currency="USD",
        period_start=start,
        period_end=end,
        from_utc=datetime(start.year, start.month, start.day, tzinfo=UTC),
        to_utc=datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
        issuing_date=end + timedelta(days=1),
        grace_until=datetime(end.year, end.month, end.day, 1, 0, 0, 654321, tzinfo=UTC) + timedelta(days=1),
        lines=(line(), line("subscription|base", 4900, kind="subscription", filter_key=None, units=Decimal(1))),
        created_at=datetime(2026, 2, 1, 0, 0, 5, 7, tzinfo=PARIS),
        updated_at=datetime(2026, 2, 1, 0, 0, 5, 7, tzinfo=UTC),
    )
    return dataclasses.replace(base, **changes)
