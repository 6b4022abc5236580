"""Rating: one subscription, one period, given usage -> an invoice draft. Pure.

    draft = rate_subscription(subscription, plan, customer, period, usage)

`usage` maps (charge ref, filter key) to that slice's usage, where the charge ref is
`Charge.ref` (its id, else its billable_metric_code) and the filter key is
`ChargeFilter.key` ('model=gpt-4;token_type=input'), or None for a charge without filters
(or for the events of a filtered charge that match none of its filters). A value is a
`ChargeUsage` or, for the common case, just the units as a Decimal/int. A missing key is
zero usage: the charge still produces its fee, since some models charge at zero (the first
graduated tier's flat fee). The usage must cover the part of the period in which this
subscription record is active, `periods.charges_window` (from its start to its end, within
the period), the window each charge fee's from/to datetimes name.

The draft holds:
- the base fee: in arrears for `period`; in advance for the period after it, when this
  record continues into it (the first in-advance fee comes from `rate_subscription_start`);
  prorated by days (start, termination, upgrade), with trial days free;
- one fee per charge, or per filter of a filtered charge, each rounded once;
- a true-up fee when a charge's min_amount_cents (prorated like the base fee) is not met.
Its total is the sum of the rounded fees, so the lines always add up to the total.
A fee or a total outside the money domain (`meterline.core.money`: a signed 64-bit integer of
minor units) raises `AmountOutOfRange`, for the caller to flag that subscription alone.

Plan changes are `meterline.core.subscriptions`' to make: an upgrade terminates the old record
and starts a new one at once, and rating prorates each; a downgrade's old record is billed for
its full period and the new one from the next.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from meterline.core.money import MONEY_CONTEXT, check_minor_units, from_minor_units, money_context
from meterline.core.pricing.charge_models import CHARGE_MODELS, ChargeModel, price
from meterline.core.pricing.charge_models.base import clamped
from meterline.core.pricing.fee import (
    ChargeResult,
    Fee,
    FeeRef,
    TierDetail,
    make_fee,
    new_charge_result,
    new_fee_ref,
    new_tier_detail,
)
from meterline.core.pricing.memo import ByIdentity
from meterline.core.pricing.periods import BillingSchedule, Period, charges_window, next_period, period_containing
from meterline.core.pricing.proration import active_dates, billable_days, day_ratio, seat_units
from meterline.core.pricing.usage import ChargeUsage, UsageKey, new_charge_usage

if TYPE_CHECKING:
    from meterline.core.catalog import BillableMetric, Charge, Customer, Plan, Subscription  # types only, as in periods

__all__ = [
    "InvoiceDraft",
    "base_fee",
    "price_in_advance_event",
    "rate_subscription",
    "rate_subscription_start",
]

UsageValue = ChargeUsage | Decimal | int
_ZERO = Decimal(0)
_ONE = Decimal(1)
# Zero usage that every model can price, percentage with free units included.
_NO_USAGE = ChargeUsage(units=_ZERO, events_count=0, event_values=())


class InvoiceDraft(NamedTuple):
    """The fees of one subscription record for one billing event, not yet persisted.
    (A NamedTuple: immutable and, made once per subscription, cheap.)"""

    subscription_external_id: str
    customer_external_id: str
    plan_code: str
    currency: str
    period: Period | None
    fees: tuple[Fee, ...]

    @property
    def amount_cents(self) -> int:
        """Total in minor units: the sum of the rounded fees (never re-rounded)."""
        return sum(fee.amount_cents for fee in self.fees)

    @property
    def amount(self) -> Decimal:
        return from_minor_units(self.amount_cents, self.currency)


def _currency(plan: Plan, customer: Customer) -> str:
    if customer.currency is not None and customer.currency != plan.amount_currency:
        # Lago refuses this too: one customer is invoiced in one currency.
        raise ValueError(
            f"customer {customer.external_id} pays in {customer.currency}, "
            f"plan {plan.code} is in {plan.amount_currency}"
        )
    return plan.amount_currency


def base_fee(subscription: Subscription, plan: Plan, customer: Customer, period: Period) -> Fee | None:
    """The plan's base fee for `period`, prorated by billable days; None if not active in it.

    In advance or in arrears only changes when it is invoiced, not what it is for: callers
    pass the period the fee pays for.
    """
    zone = customer.zone
    window = active_dates(period, subscription, zone)
    if window is None:
        return None
    service = charges_window(period, subscription)
    return _base_fee(subscription, plan, period, window, service, zone, _currency(plan, customer))


def _base_fee(subscription: Subscription, plan: Plan, period: Period, window, service, zone, currency: str) -> Fee:
    days = billable_days(window, subscription, plan.trial_period, zone)
    full = plan.amount  # == from_minor_units(plan.amount_cents, currency), cached on the plan
    if days == period.days:  # the common case: exact, and no 50-digit arithmetic
        ratio, precise = _ONE, full
    else:
        ratio = day_ratio(days, period)
        precise = MONEY_CONTEXT.multiply(full, ratio)
    # The detail reads "ratio x full amount": amount == units * per_unit_amount holds exactly.
    detail = new_tier_detail((_ZERO, None, ratio, full, _ZERO, precise, "proration", None))
    ref = new_fee_ref(
        (subscription.external_id, period.start_date, period.end_date, "subscription", None, None, plan.code)
    )
    return make_fee(
        ref, currency, new_charge_result((_ONE, precise, (detail,))), plan.invoice_display_name or plan.name, *service
    )


def _continues_into_next(subscription: Subscription, period: Period) -> bool:
    """Whether this record (same plan) is still billed after `period`."""
    if subscription.status in ("terminated", "canceled") or subscription.next_plan_code is not None:
        return False
    end = subscription.end
    return end is None or end > period.end_utc


def rate_subscription_start(subscription: Subscription, plan: Plan, customer: Customer) -> InvoiceDraft:
    """The invoice due when a record starts: the first in-advance base fee (prorated),
    or nothing for a plan billed in arrears."""
    schedule = BillingSchedule.of(subscription, plan, customer)
    period = period_containing(schedule, subscription.start)
    fee = base_fee(subscription, plan, customer, period) if plan.pay_in_advance else None
    return InvoiceDraft(
        subscription.external_id,
        customer.external_id,
        plan.code,
        _currency(plan, customer),
        period,
        (fee,) if fee else (),
    )


def rate_subscription(
    subscription: Subscription,
    plan: Plan,
    customer: Customer,
    period: Period,
    usage: Mapping[UsageKey, UsageValue],
    *,
    metrics: Mapping[str, BillableMetric] | None = None,
) -> InvoiceDraft:
    """The end-of-period invoice of `subscription` for `period` (see the module docstring).

    `metrics` (by code), when given, applies each metric's rounding_function to its units.
    """
    with money_context():  # one context for every charge, not one per charge
        return _rate(subscription, plan, customer, period, usage, metrics)


def _rate(subscription, plan, customer, period, usage, metrics) -> InvoiceDraft:
    currency = _currency(plan, customer)
    zone = customer.zone
    fees: list[Fee] = []
    window = active_dates(period, subscription, zone)
    if window is not None:
        service = charges_window(period, subscription)
        if not plan.pay_in_advance:
            fees.append(_base_fee(subscription, plan, period, window, service, zone, currency))
        fees += _charge_fees(subscription, plan, period, window, service, currency, usage, metrics, zone)
    if plan.pay_in_advance and _continues_into_next(subscription, period):
        following = next_period(BillingSchedule.of(subscription, plan, customer), period)
        fee = base_fee(subscription, plan, customer, following)
        if fee is not None:
            fees.append(fee)
    draft = InvoiceDraft(subscription.external_id, customer.external_id, plan.code, currency, period, tuple(fees))
    # Each fee is in the money domain (make_fee); their sum must be too.
    check_minor_units(draft.amount_cents, f"invoice of {subscription.external_id} for {period.start_date}")
    return draft


class _Slot(NamedTuple):
    """One fee a charge makes: the charge itself, or one of its filters."""

    usage_key: UsageKey
    filter_key: str | None
    label: str
    model: ChargeModel
    properties: Any
    optional: bool  # the unfiltered rest of a filtered charge: billed only if it has usage


# Charge slots per (frozen) Plan: rating asks for them once per subscription; they change only
# with the plan.
_SLOTS: ByIdentity[tuple[tuple[Charge, str, tuple[_Slot, ...]], ...]] = ByIdentity(1024)


def _charge_slots(plan: Plan) -> tuple[tuple[Charge, str, tuple[_Slot, ...]], ...]:
    return _SLOTS.get(plan, _compile_slots)


def _compile_slots(plan: Plan) -> tuple[tuple[Charge, str, tuple[_Slot, ...]], ...]:
    compiled = []
    for charge in plan.charges:
        if charge.pay_in_advance:
            continue  # refused by the catalog (core.catalog.Charge): never billed at the end of a period
        name = charge.invoice_display_name or charge.billable_metric_code or charge.ref
        own = _Slot(
            (charge.ref, None), None, name, CHARGE_MODELS[charge.charge_model], charge.properties, bool(charge.filters)
        )
        slots = [
            _Slot(
                (charge.ref, f.key),
                f.key,
                f.invoice_display_name or f"{name} ({f.key})",
                CHARGE_MODELS[charge.charge_model],
                f.properties,
                False,
            )
            for f in charge.filters
        ]
        compiled.append((charge, name, (*slots, own)))
    return tuple(compiled)


def _charge_fees(subscription, plan, period, window, service, currency, usage, metrics, zone) -> list[Fee]:
    """One fee per charge and filter, and the true-ups. The hot loop of a billing run, so it
    is one flat function over precompiled slots; runs inside money_context()."""
    fees: list[Fee] = []
    sub_id, plan_code = subscription.external_id, plan.code
    start, end = period.start_date, period.end_date
    from_datetime, to_datetime = service
    for charge, name, slots in _charge_slots(plan):
        charge_fees = []
        for usage_key, filter_key, label, model, properties, optional in slots:
            raw = usage.get(usage_key)
            if raw is None:
                if optional:
                    continue
                charge_usage = _NO_USAGE
            elif raw.__class__ is ChargeUsage:
                charge_usage = (
                    raw
                    if raw.seat_events is None and metrics is None
                    else _expand(charge, raw, period, window, zone, metrics)
                )
            else:
                charge_usage = new_charge_usage(
                    (raw if raw.__class__ is Decimal else Decimal(raw), None, None, None, None)
                )
                if metrics is not None:
                    charge_usage = _expand(charge, charge_usage, period, window, zone, metrics)
            # compute, not apply: the money context is entered once per subscription (see rate_subscription)
            result = model.compute(properties, clamped(charge_usage))
            events = charge_usage.events_count if charge_usage.event_values is None else len(charge_usage.event_values)
            ref = new_fee_ref((sub_id, start, end, "charge", usage_key[0], filter_key, plan_code))
            charge_fees.append(make_fee(ref, currency, result, label, from_datetime, to_datetime, events))
        if charge.min_amount_cents:
            true_up = _true_up(charge, charge_fees, name, period, window, currency, sub_id, plan_code, service)
            if true_up is not None:
                charge_fees.append(true_up)
        fees += charge_fees
    return fees


def _expand(charge: Charge, usage: ChargeUsage, period: Period, window, zone, metrics) -> ChargeUsage:
    """Turn seat events into units, or apply the metric's rounding."""
    if usage.seat_events is not None:
        prorated, full = seat_units(usage.seat_events, period, zone, window)
        if charge.prorated:
            # NOTE: each seat pays for its own active days; the tier of a volume charge is
            # still chosen by the number of seats (full_units), as in Lago.
            return new_charge_usage((prorated, usage.events_count, usage.event_values, full, usage.seat_events))
        return new_charge_usage((full, usage.events_count, usage.event_values, None, usage.seat_events))
    if metrics is not None and usage.event_values is None:
        metric = metrics.get(charge.billable_metric_code or "")
        if metric is not None and metric.rounding_function is not None:
            return usage._replace(units=metric.round_units(usage.units))
    return usage


def _true_up(
    charge: Charge,
    fees: list[Fee],
    name: str,
    period: Period,
    window,
    currency: str,
    sub_id: str,
    plan_code: str,
    service,
) -> Fee | None:
    """Lago's spending minimum: a separate fee tops the charge up to min_amount_cents,
    prorated by the record's active days in the period."""
    first, last = window
    ratio = day_ratio((last - first).days + 1, period)
    minimum = from_minor_units(charge.min_amount_cents, currency) * ratio
    # compare with what the invoice will show: the rounded fees
    billed = sum((fee.amount for fee in fees), _ZERO)
    if billed >= minimum:
        return None
    missing = minimum - billed
    detail = TierDetail(_ZERO, None, _ZERO, _ZERO, missing, missing, kind="adjustment")
    ref = FeeRef(sub_id, period.start_date, period.end_date, "true_up", charge.ref, None, plan_code)
    return make_fee(ref, currency, ChargeResult(_ONE, missing, (detail,)), f"{name} (minimum)", *service)


def price_in_advance_event(properties, before: ChargeUsage, after: ChargeUsage) -> ChargeResult:
    """Price of one pay_in_advance event: the charge with the event minus without it.

    NOTE: as Lago, the "without" side costs nothing at zero units, so the first event pays a
    graduated charge's first flat fee instead of it never being billed.
    """
    with_event = price(properties, after)
    without = price(properties, before) if before.units > 0 else ChargeResult(_ZERO, _ZERO)
    with money_context():
        delta = with_event.precise_amount - without.precise_amount
        units = with_event.units - without.units
    if delta < 0:
        delta = _ZERO
    return ChargeResult(units, delta, (TierDetail(_ZERO, None, _ZERO, _ZERO, delta, delta, kind="adjustment"),))
