"""Invoices: one per (subscription, period), its lines, and the rules of its life. Pure.

An invoice is made from rating's `InvoiceDraft` (the fees, each rounded once) and lives
through these states; a state never moves backwards, so a late or repeated webhook cannot
undo a payment:

    draft ──(grace period over)──▶ finalized ──▶ paid
      │                              │  ▲
      │                              ▼  │ (a retried charge succeeds)
      │                          payment_failed
      └──────────▶ voided ◀──────────┘        (paid is final; voided is final)

While it is a draft (until the period's end plus the customer's grace period) a billing run
refreshes its lines from the usage so far. Finalized, it never changes again: usage that
arrives later is billed on the subscription's next invoice as "late usage" lines, priced as
in its own period (`late_lines`).
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Literal, get_args

from meterline.core.money import MONEY_CONTEXT, check_minor_units, currency_exponent, round_money
from meterline.core.pricing.fee import Fee

if TYPE_CHECKING:
    from meterline.core.catalog.metrics import BillableMetric
    from meterline.core.catalog.plans import Plan

__all__ = [
    "INVOICE_STATUSES",
    "NO_PAYMENT_METHOD",
    "Invoice",
    "InvoiceLine",
    "InvoiceStatus",
    "ProviderStep",
    "can_move",
    "can_step",
    "invoice_id",
    "invoice_number",
    "late_lines",
    "lines_from_fees",
    "payment_status",
    "recurring_charges",
]

InvoiceStatus = Literal["draft", "finalized", "paid", "payment_failed", "voided"]
INVOICE_STATUSES: tuple[InvoiceStatus, ...] = get_args(InvoiceStatus)

# Which state may follow which. Anything else is refused (a webhook that arrives late or twice
# is then a no-op, never a step back).
_NEXT: dict[str, frozenset[str]] = {
    "draft": frozenset({"finalized", "voided"}),
    "finalized": frozenset({"paid", "payment_failed", "voided"}),
    "payment_failed": frozenset({"paid", "voided"}),
    "paid": frozenset(),
    "voided": frozenset(),
}



class ProviderStep(enum.StrEnum):
    """How far the payment provider has got with a finalized invoice; a run resumes from here.
    The values are what the stores keep (and equal those strings)."""

    INVOICE = "invoice"  # the provider's invoice created, with its items
    FINALIZED = "finalized"  # finalized there, its total compared with ours
    COLLECTED = "collected"  # charged or sent


# Each step has one next step, from none to collected: a step is never skipped or repeated.
_NEXT_STEP: dict[ProviderStep | None, ProviderStep] = {
    None: ProviderStep.INVOICE,
    ProviderStep.INVOICE: ProviderStep.FINALIZED,
    ProviderStep.FINALIZED: ProviderStep.COLLECTED,
}

# The flag of a payment_failed invoice whose charge failed because the customer had no payment
# method: the billing run charges it again once they have one (services/billing.py).
NO_PAYMENT_METHOD = "no_payment_method"

_SIX_PLACES = Decimal("0.000001")
_INVOICE_NS = uuid.UUID("3b7e4c1a-5d2f-4e8b-9a6c-0f1e2d3c4b5a")


def can_move(current: InvoiceStatus, new: InvoiceStatus) -> bool:
    """Whether `current` may become `new` (the same state again is not a move)."""
    return new in _NEXT[current]


def can_step(current: ProviderStep | None, new: ProviderStep) -> bool:
    """Whether the provider's step `current` may become `new` (only the next one)."""
    return _NEXT_STEP.get(current) is new


def payment_status(status: InvoiceStatus) -> Literal["pending", "succeeded", "failed"]:
    """Lago's payment_status for one of our states."""
    if status == "paid":
        return "succeeded"
    if status == "payment_failed":
        return "failed"
    return "pending"


def invoice_id(subscription_external_id: str, period_start: date, period_end: date, kind: str = "periodic") -> str:
    """The invoice's stable id (Lago's lago_id): the same on every run, every backend, so a
    rerun finds the invoice it made instead of making another. A period has one invoice of
    each kind (`Invoice.kind`)."""
    key = f"{subscription_external_id}\x00{period_start}\x00{period_end}"
    return str(uuid.uuid5(_INVOICE_NS, key if kind == "periodic" else f"{key}\x00{kind}"))


def invoice_number(customer_external_id: str, sequence: int) -> str:
    """Lago-like: a prefix per customer, then the customer's own sequence (never reused).
    The prefix is a short hash of the customer's id: stable, and ids may hold any character."""
    prefix = hashlib.sha256(customer_external_id.encode()).hexdigest()[:8].upper()
    return f"ML-{prefix}-{sequence:04d}"


@dataclass(frozen=True)
class InvoiceLine:
    """One fee on an invoice. `ref` is the fee's stable key (FeeRef.key): the Stripe
    idempotency key and metadata of the line derive from it."""

    ref: str
    kind: str  # subscription | charge | true_up | late_usage
    description: str
    units: Decimal
    precise_amount: Decimal  # major units, unrounded
    amount_cents: int  # rounded once
    charge_ref: str | None = None
    filter_key: str | None = None
    plan_code: str | None = None
    from_datetime: datetime | None = None
    to_datetime: datetime | None = None
    events_count: int | None = None
    late_for: str | None = None  # late usage: the ref of the finalized line it adds to
    # The line's charge bills a recurring metric (seats, storage): the finance reports count
    # it as recurring revenue, not usage. False for base fees, and in documents made before it.
    recurring: bool = False


@dataclass(frozen=True)
class Invoice:
    id: str
    customer_external_id: str
    subscription_external_id: str
    currency: str
    period_start: date
    period_end: date  # inclusive, the customer's local date
    from_utc: datetime
    to_utc: datetime  # exclusive
    issuing_date: date
    grace_until: datetime  # stays a draft until then
    # "periodic": the period's invoice, made once it has ended (its usage; a plan paid in
    # advance adds the next period's base fee). "starting": made when a record on a plan paid
    # in advance starts, with that first period's base fee, which no periodic invoice carries.
    kind: Literal["periodic", "starting"] = "periodic"
    status: InvoiceStatus = "draft"
    lines: tuple[InvoiceLine, ...] = ()
    number: str | None = None  # given at finalization, sequential per customer
    sequential_id: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finalized_at: datetime | None = None
    paid_at: datetime | None = None
    # When (wall clock) the usage behind its lines was read: a later run looks for late usage
    # of a finalized period only among events processed after it (services/billing.py).
    usage_read_at: datetime | None = None
    # The payment provider's side (Stripe): filled in step by step, so a crash resumes.
    provider_customer_id: str | None = None
    provider_invoice_id: str | None = None
    hosted_invoice_url: str | None = None
    collection_method: Literal["charge_automatically", "send_invoice"] = "charge_automatically"
    days_until_due: int | None = None  # send_invoice only
    # How far the provider has got (None: not started). A run resumes from here.
    provider_step: ProviderStep | None = None
    # Why it is held (e.g. "provider_total_mismatch": a person looks; NO_PAYMENT_METHOD: charged
    # again once the customer has a payment method); None when fine.
    flag: str | None = None
    version: int = 0  # the store's optimistic version

    def __post_init__(self) -> None:
        # A stored document (and a caller) gives the step as its text: read it as the step,
        # refusing text that is none.
        if self.provider_step is not None and not isinstance(self.provider_step, ProviderStep):
            object.__setattr__(self, "provider_step", ProviderStep(self.provider_step))
        # The money domain (core.money): every line and the total fit a signed 64-bit integer
        # of minor units, so no invoice is made that a store could not write. Rating checks
        # its fees; late-usage lines join them here.
        total = 0
        for line in self.lines:
            total += check_minor_units(line.amount_cents, f"invoice {self.id} line {line.ref}")
        check_minor_units(total, f"invoice {self.id}")

    @property
    def amount_cents(self) -> int:
        """The total: the sum of the lines' rounded amounts, never rounded again."""
        return sum(line.amount_cents for line in self.lines)

    @property
    def payment_status(self) -> str:
        return payment_status(self.status)

    @property
    def due_date(self) -> date:
        """When payment is due: on the issuing date when charged automatically, else the
        customer's net payment term later (`days_until_due`, send_invoice only)."""
        return self.issuing_date + timedelta(days=self.days_until_due or 0)

    def moved(self, status: InvoiceStatus, at: datetime, **changes) -> Invoice:
        """This invoice in `status`; raises ValueError if the move would go backwards."""
        if not can_move(self.status, status):
            raise ValueError(f"invoice {self.id}: {self.status} cannot become {status}")
        stamps = {"finalized": "finalized_at", "paid": "paid_at"}
        if status in stamps:
            changes.setdefault(stamps[status], at)
        return replace(self, status=status, updated_at=at, **changes)

    def stepped(self, step: ProviderStep, at: datetime, **changes) -> Invoice:
        """This invoice at the provider's `step`; raises ValueError unless it is the next one."""
        if not can_step(self.provider_step, step):
            raise ValueError(f"invoice {self.id}: provider step {self.provider_step} cannot become {step}")
        return replace(self, provider_step=step, updated_at=at, **changes)


def _shown(value: Decimal) -> str:
    """A number as a reader sees it: exact up to six decimals, else rounded there and marked
    (prorated seats are thirds and sevenths; the line's amount stays exact)."""
    if value == value.quantize(_SIX_PLACES, rounding=ROUND_HALF_UP):
        return format(value.normalize(), "f")
    return "≈" + format(value.quantize(_SIX_PLACES, rounding=ROUND_HALF_UP).normalize(), "f")


def _tier_text(fee: Fee) -> str:
    """The tier breakdown, for the line's description on the invoice the customer reads."""
    parts = []
    for d in fee.details:
        if d.kind == "tier" and (d.units or d.flat_amount):
            upper = "∞" if d.to_value is None else _shown(d.to_value)
            text = f"{_shown(d.units)} × {_shown(d.per_unit_amount)}"
            if d.flat_amount:
                text += f" + {_shown(d.flat_amount)}"
            parts.append(f"[{_shown(d.from_value)}–{upper}] {text}")
    return "; ".join(parts)


def recurring_charges(plans: Iterable[Plan], metrics: Iterable[BillableMetric]) -> frozenset[tuple[str, str]]:
    """The (plan code, charge ref) of every charge of `plans` whose metric is recurring: the
    lines `lines_from_fees` marks as recurring revenue (seats, storage) rather than usage."""
    codes = {m.code for m in metrics if m.recurring}
    return frozenset(
        (plan.code, charge.ref) for plan in plans for charge in plan.charges if charge.billable_metric_code in codes
    )


def lines_from_fees(fees: Iterable[Fee], recurring: Collection[tuple[str, str]] = ()) -> tuple[InvoiceLine, ...]:
    """The invoice lines of `fees`; `recurring` holds the (plan code, charge ref) of the
    charges whose metric is recurring (`recurring_charges`)."""
    lines = []
    for fee in fees:
        tiers = _tier_text(fee)
        lines.append(InvoiceLine(
            ref=fee.ref.key,
            kind=fee.ref.kind,
            description=f"{fee.display_name} ({tiers})" if tiers else fee.display_name,
            units=fee.units,
            precise_amount=fee.precise_amount,
            amount_cents=fee.amount_cents,
            charge_ref=fee.ref.charge_ref,
            filter_key=fee.ref.filter_key,
            plan_code=fee.ref.plan_code,
            from_datetime=fee.from_datetime,
            to_datetime=fee.to_datetime,
            events_count=fee.events_count,
            recurring=(fee.ref.plan_code, fee.ref.charge_ref) in recurring,
        ))
    return tuple(lines)


def late_lines(
    finalized: Invoice, billed_later: Sequence[InvoiceLine], rerated: Sequence[Fee], on: str
) -> tuple[InvoiceLine, ...]:
    """Usage that reached `finalized`'s period after it was finalized, as lines for the
    invoice `on` (another period's): one per charge line whose re-rated amount grew.

    `rerated` are the fees of the same period rated again now, with every event; `billed_later`
    are the late lines already put on other invoices for this period. Each new line carries
    the difference, so graduated tiers continue from the units already billed (pricing all the
    units and subtracting what was billed is the same as pricing the late units on top), and
    the amounts billed for the period add up to the rounding of its whole precise amount.
    """
    currency = finalized.currency
    billed: dict[str, tuple[Decimal, Decimal, int]] = {}
    for line in (*finalized.lines, *billed_later):
        key = line.late_for or line.ref
        units, precise, cents = billed.get(key, (Decimal(0), Decimal(0), 0))
        billed[key] = (units + line.units, precise + line.precise_amount, cents + line.amount_cents)
    out = []
    period_text = f"{finalized.period_start}..{finalized.period_end}"
    for fee in rerated:
        if fee.ref.kind != "charge":
            continue  # base fees and true-ups do not change with usage arriving late
        units, precise, cents = billed.get(fee.ref.key, (Decimal(0), Decimal(0), 0))
        with_late = round_money(fee.precise_amount, currency)
        delta_cents = int(with_late.scaleb(currency_exponent(currency), MONEY_CONTEXT)) - cents
        delta_units = fee.units - units
        if delta_units <= 0 and delta_cents <= 0:
            continue
        out.append(InvoiceLine(
            ref=f"late|{on}|{fee.ref.key}",
            kind="late_usage",
            description=f"Late usage for {period_text}: {fee.display_name}",
            units=delta_units,
            precise_amount=fee.precise_amount - precise,
            amount_cents=delta_cents,
            charge_ref=fee.ref.charge_ref,
            filter_key=fee.ref.filter_key,
            plan_code=fee.ref.plan_code,
            from_datetime=fee.from_datetime,
            to_datetime=fee.to_datetime,
            late_for=fee.ref.key,
            recurring=any(line.recurring for line in finalized.lines if line.ref == fee.ref.key),
        ))
    return tuple(out)
