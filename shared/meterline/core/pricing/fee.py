"""Fees: the one place where a precise amount becomes money.

A charge model returns a `ChargeResult` (units, unrounded amount, per-tier details). `make_fee`
turns it into a `Fee` by rounding exactly once, ROUND_HALF_UP to the currency's exponent, and
keeps the unrounded `precise_amount` beside it, as Lago does. Rounding per tier and then adding
would drift by up to half a cent per tier; rounding the invoice total instead of each fee would
make lines that do not add up to the total. So: precise tiers, one rounding per fee, and the
invoice total is the sum of the rounded fees.

Every fee carries a `FeeRef` naming what it bills (subscription, period, charge, filter), from
which stable Stripe idempotency keys and metadata are derived: rerunning a billing run for the
same period produces the same keys, so it cannot bill twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import partial
from typing import Literal, NamedTuple

from meterline.core.money import CURRENCY_EXPONENTS, MONEY_CONTEXT, check_minor_units, currency_exponent, round_money

__all__ = [
    "ChargeResult",
    "Fee",
    "FeeKind",
    "FeeRef",
    "TierDetail",
    "make_fee",
    "new_charge_result",
    "new_fee_ref",
    "new_tier_detail",
]

FeeKind = Literal["subscription", "charge", "true_up"]
_INT64 = 2**63  # the money domain: -2^63 <= amount_cents < 2^63 (core.money.check_minor_units)


# NOTE: TierDetail, ChargeResult and FeeRef are NamedTuples, not frozen dataclasses: they are
# made several times per subscription in the billing loop, and a frozen dataclass costs about
# three times as much to build (each field goes through object.__setattr__). They are just as
# immutable. Fee, made once per invoice line, stays a frozen dataclass.


class TierDetail(NamedTuple):
    """One line of a fee's computation. Invariant: amount == units * per_unit_amount + flat_amount.

    kind is "tier" for graduated/volume/standard ranges, "packages" (units = packages bought),
    "free" (units given away), "percentage" (per_unit_amount = rate / 100), "fixed_fees" (units =
    paid events), "proration" (base fee: units = share of the period, per_unit_amount = full
    fee) or "adjustment" (a min/max or true-up correction carried in flat_amount). Amounts are
    precise (never rounded here).
    """

    from_value: Decimal
    to_value: Decimal | None
    units: Decimal
    per_unit_amount: Decimal
    flat_amount: Decimal
    amount: Decimal
    kind: str = "tier"
    rate: Decimal | None = None


class ChargeResult(NamedTuple):
    """What a charge model computes: units priced, the unrounded amount and how it was made."""

    units: Decimal
    precise_amount: Decimal
    details: tuple[TierDetail, ...] = ()


class FeeRef(NamedTuple):
    """Names what a fee bills, stably across reruns (dates are the customer's local dates)."""

    subscription_external_id: str
    period_start: date
    period_end: date  # inclusive, as printed on an invoice
    kind: FeeKind
    charge_ref: str | None = None
    filter_key: str | None = None
    plan_code: str | None = None

    @property
    def key(self) -> str:
        """Readable canonical key, e.g. 'sub_1|pro|2024-01-01|2024-01-31|charge|tokens|model=gpt-4'.

        The plan code is part of it because an upgrade leaves two records with the same
        subscription external_id in one period (old plan up to the switch, new plan after).
        """
        parts = [
            self.subscription_external_id,
            self.plan_code or "-",
            self.period_start.isoformat(),
            self.period_end.isoformat(),
            self.kind,
        ]
        if self.charge_ref is not None:
            parts.append(self.charge_ref)
        if self.filter_key is not None:
            parts.append(self.filter_key)
        return "|".join(parts)

    @property
    def idempotency_key(self) -> str:
        """A Stripe idempotency key (at most 255 characters): the readable key when it fits,
        otherwise a prefix plus its SHA-256, so long filter keys stay unique and stable."""
        return _bounded(f"ml|{self.key}")

    def tier_key(self, index: int) -> str:
        """Reference of one tier line, for providers that bill tiers as separate items."""
        return _bounded(f"ml|{self.key}|tier{index}")


def _bounded(key: str, limit: int = 255) -> str:
    if len(key) <= limit:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{key[: limit - len(digest) - 8]}|sha256:{digest}"


# Fast constructors for the billing loop: tuple.__new__ skips the Python-level __new__ that
# NamedTuple generates, which is about half the cost of building one. They take every field,
# in order, as one tuple, and build exactly the object the class call would.
new_tier_detail = partial(tuple.__new__, TierDetail)
new_charge_result = partial(tuple.__new__, ChargeResult)
new_fee_ref = partial(tuple.__new__, FeeRef)


@dataclass(frozen=True)
class Fee:
    """A rounded invoice line. `amount` (major units) and `amount_cents` (minor units) come
    from the same single rounding of `precise_amount`."""

    ref: FeeRef
    currency: str
    units: Decimal
    precise_amount: Decimal
    amount: Decimal
    amount_cents: int
    details: tuple[TierDetail, ...]
    display_name: str
    from_datetime: datetime
    to_datetime: datetime  # exclusive
    events_count: int | None = None

    @property
    def precise_amount_cents(self) -> Decimal:
        """Lago's precise_amount_cents: the unrounded amount in minor units."""
        return self.precise_amount.scaleb(currency_exponent(self.currency), MONEY_CONTEXT)


def make_fee(
    ref: FeeRef,
    currency: str,
    result: ChargeResult,
    display_name: str,
    from_datetime: datetime,
    to_datetime: datetime,
    events_count: int | None = None,
) -> Fee:
    """Round `result` once and wrap it as a Fee. The only rounding in the pricing core."""
    amount = round_money(result.precise_amount, currency)
    # exact: amount was just quantized to the currency's exponent
    amount_cents = int(amount.scaleb(CURRENCY_EXPONENTS[currency], MONEY_CONTEXT))
    if not -_INT64 <= amount_cents < _INT64:  # inlined: once per fee
        # One subscription's usage times its price left the money domain: this subscription
        # is flagged (AmountOutOfRange), never stored as an integer no store can write.
        check_minor_units(amount_cents, f"fee {ref.key}")
    # NOTE: the generated __init__ of a frozen dataclass sets each of these 11 fields through
    # object.__setattr__, which made Fee construction the largest single cost of rating a
    # subscription. Installing the instance dict in one step builds the same frozen object
    # (equality, repr, asdict and immutability unchanged) several times faster. Fee has no
    # __post_init__ to skip; keep the keys in step with the fields (tests compare with Fee(...)).
    fee = object.__new__(Fee)
    object.__setattr__(
        fee,
        "__dict__",
        {
            "ref": ref,
            "currency": currency,
            "units": result.units,
            "precise_amount": result.precise_amount,
            "amount": amount,
            "amount_cents": amount_cents,
            "details": result.details,
            "display_name": display_name,
            "from_datetime": from_datetime,
            "to_datetime": to_datetime,
            "events_count": events_count,
        },
    )
    return fee
