"""The tenant-isolation world's constants: 40 bystanders on one plan, billed for November."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

NOV = datetime(2026, 11, 1, tzinfo=UTC)
IN_NOVEMBER = NOV + timedelta(days=20)
AS_OF = datetime(2026, 12, 2, tzinfo=UTC)  # November closed, its grace period over: finalized
BYSTANDERS = 40
BASE_CENTS = 1000
PRICE = Decimal("0.0003")  # per token, the bystanders' plan
VICTIM = "sub_victim"


def cents(amount: Decimal) -> int:
    """A fee as the invoice must show it: rounded once, ROUND_HALF_UP, to cents."""
    return int(amount.quantize(Decimal("0.01"), ROUND_HALF_UP) * 100)
