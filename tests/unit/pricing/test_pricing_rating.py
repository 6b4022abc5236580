"""Rating a subscription for a period: base fee, charges per filter, seats, true-ups (plan changes:
tests/unit/test_subscriptions.py)."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.catalog import BillableMetric, Customer, Plan, Subscription
from meterline.core.money import money_context, round_money
from meterline.core.pricing.fee import FeeRef
from meterline.core.pricing.periods import BillingSchedule, period_containing, period_for_date
from meterline.core.pricing.rating import (
    price_in_advance_event,
    rate_subscription,
    rate_subscription_start,
)
from meterline.core.pricing.usage import ChargeUsage, SeatEvent

D = Decimal
INPUT = "model=gpt-4o;token_type=input"
OUTPUT = "model=gpt-4o;token_type=output"


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def graduated(*rows):
    return {
        "graduated_ranges": [
            {"from_value": f, "to_value": t, "per_unit_amount": u, "flat_amount": fl} for f, t, u, fl in rows
        ]
    }


HYBRID = {
    "code": "team",
    "name": "Team",
    "interval": "monthly",
    "amount_cents": 4900,
    "amount_currency": "USD",
    "charges": [
        {
            "billable_metric_code": "seats",
            "charge_model": "standard",
            "prorated": True,
            "invoice_display_name": "Seats",
            "properties": {"amount": "20"},
        },
        {
            "billable_metric_code": "tokens",
            "charge_model": "graduated",
            "properties": graduated((0, 1_000_000, "0", "0"), (1_000_001, None, "0.000002", "0")),
            "filters": [
                {
                    "invoice_display_name": "Input tokens",
                    "values": {"model": ["gpt-4o"], "token_type": ["input"]},
                    "properties": graduated((0, 1_000_000, "0.000001", "0"), (1_000_001, None, "0.0000005", "0")),
                },
                {
                    "values": {"token_type": ["output"], "model": ["gpt-4o"]},
                    "properties": graduated((0, None, "0.000004", "1")),
                },
            ],
        },
    ],
}
CUSTOMER = Customer(external_id="acme", currency="USD", timezone="America/New_York")


def plan(**changes):
    return Plan.model_validate({**HYBRID, **changes})


def sub(**kw):
    base = {
        "external_id": "sub_1",
        "external_customer_id": "acme",
        "plan_code": "team",
        "subscription_at": utc(2024, 1, 1, 5),
        "started_at": utc(2024, 1, 1, 5),
    }
    return Subscription(**{**base, **kw})


def april(subscription=None, the_plan=None, customer=CUSTOMER):
    schedule = BillingSchedule.of(subscription or sub(), the_plan or plan(), customer)
    return period_for_date(schedule, date(2024, 4, 1))


def close(precise, numerator, denominator):
    """precise equals numerator / denominator to 40 decimals (proration ratios are 50-digit)."""
    with money_context():
        return abs(precise - D(numerator) / D(denominator)) < D("1e-40")


def fee(draft, kind, charge=None, filter_key=None):
    (found,) = [
        f for f in draft.fees if f.ref.kind == kind and f.ref.charge_ref == charge and f.ref.filter_key == filter_key
    ]
    return found


SEATS = ChargeUsage(
    seat_events=(
        SeatEvent("u1", "add", utc(2024, 2, 1)),
        SeatEvent("u2", "add", utc(2024, 2, 1)),
        SeatEvent("u3", "add", utc(2024, 4, 16, 14)),  # Apr 16 in New York: 15 of 30 days
    )
)


def test_hybrid_plan_full_month():
    usage = {("seats", None): SEATS, ("tokens", INPUT): D(1_500_000), ("tokens", OUTPUT): D(250_000)}
    draft = rate_subscription(sub(), plan(), CUSTOMER, april(), usage)
    assert fee(draft, "subscription").amount == D("49.00")
    seats = fee(draft, "charge", "seats")
    assert seats.units == D("2.5") and seats.amount == D("50.00")
    tokens_in = fee(draft, "charge", "tokens", INPUT)
    assert tokens_in.amount == D("1.25")  # 1M * 0.000001 + 0.5M * 0.0000005
    assert tokens_in.display_name == "Input tokens"
    tokens_out = fee(draft, "charge", "tokens", OUTPUT)
    assert tokens_out.amount == D("2.00")  # 250k * 0.000004 + 1 flat
    assert tokens_out.display_name == f"tokens ({OUTPUT})"
    assert len(draft.fees) == 4  # no unfiltered token usage given: no default-bucket fee
    assert draft.amount_cents == 4900 + 5000 + 125 + 200
    assert draft.amount == D("102.25")
    assert draft.period.start_utc == utc(2024, 4, 1, 4)  # EDT midnight


def test_missing_usage_is_zero_usage():
    draft = rate_subscription(sub(), plan(), CUSTOMER, april(), {})
    assert [f.amount for f in draft.fees] == [D("49.00"), D("0.00"), D("0.00"), D("1.00")]  # output's flat fee


def test_unfiltered_events_get_the_charge_default_properties():
    draft = rate_subscription(sub(), plan(), CUSTOMER, april(), {("tokens", None): D(2_000_000)})
    assert fee(draft, "charge", "tokens").amount == D("2.00")


def test_subscription_starting_mid_period_is_prorated_by_local_days():
    late = sub(subscription_at=utc(2024, 4, 16, 3), started_at=utc(2024, 4, 16, 3))  # Apr 15 23:00 in New York
    draft = rate_subscription(late, plan(), CUSTOMER, april(late), {("seats", None): SEATS})
    base = fee(draft, "subscription")
    assert close(base.precise_amount, 49 * 16, 30)
    assert base.amount == D("26.13")
    assert base.from_datetime == utc(2024, 4, 16, 3)
    # seats are billed within the subscription's days only: u1, u2 from Apr 15 (16 days), u3 15 days
    assert close(fee(draft, "charge", "seats").units, 47, 30)


def test_terminated_subscription_is_billed_to_the_termination_day():
    gone = sub(status="terminated", terminated_at=utc(2024, 4, 10, 16))
    draft = rate_subscription(gone, plan(), CUSTOMER, april(), {})
    assert fee(draft, "subscription").amount == round_money(D("49") * 10 / 30, "USD")
    assert fee(draft, "subscription").to_datetime == utc(2024, 4, 10, 16)


def test_not_active_in_period_gives_an_empty_draft():
    later = sub(subscription_at=utc(2024, 6, 1, 4), started_at=utc(2024, 6, 1, 4))
    assert rate_subscription(later, plan(), CUSTOMER, april(), {}).fees == ()


def test_pay_in_advance_bills_the_next_period_with_this_period_usage():
    advance = plan(pay_in_advance=True)
    period = april(the_plan=advance)
    draft = rate_subscription(sub(), advance, CUSTOMER, period, {("seats", None): SEATS})
    base = fee(draft, "subscription")
    assert (base.ref.period_start, base.ref.period_end) == (date(2024, 5, 1), date(2024, 5, 31))
    assert base.amount == D("49.00")
    assert fee(draft, "charge", "seats").ref.period_start == date(2024, 4, 1)
    ending = sub(ending_at=utc(2024, 5, 16, 4))  # ends after May 15 in New York
    assert fee(rate_subscription(ending, advance, CUSTOMER, period, {}), "subscription").amount == round_money(
        D(49) * 15 / 31, "USD"
    )
    terminated = sub(status="terminated", terminated_at=utc(2024, 4, 30, 12))
    assert [f.ref.kind for f in rate_subscription(terminated, advance, CUSTOMER, period, {}).fees] == ["charge"] * 3


def test_subscription_start_invoice_for_pay_in_advance():
    advance = plan(pay_in_advance=True)
    late = sub(subscription_at=utc(2024, 4, 16, 12), started_at=utc(2024, 4, 16, 12))
    draft = rate_subscription_start(late, advance, CUSTOMER)
    assert [f.amount for f in draft.fees] == [round_money(D(49) * 15 / 30, "USD")]
    assert rate_subscription_start(late, plan(), CUSTOMER).fees == ()


def test_trial_days_are_free_but_usage_is_billed():
    trial = plan(trial_period=20)
    late = sub(subscription_at=utc(2024, 4, 1, 12), started_at=utc(2024, 4, 1, 12))
    draft = rate_subscription(late, trial, CUSTOMER, april(late, trial), {("tokens", INPUT): D(1000)})
    assert fee(draft, "subscription").amount == round_money(D(49) * 10 / 30, "USD")
    assert fee(draft, "charge", "tokens", INPUT).precise_amount == D("0.001")


def test_min_amount_true_up_is_prorated_and_separate():
    body = {
        **HYBRID,
        "charges": [
            {
                "billable_metric_code": "calls",
                "charge_model": "standard",
                "min_amount_cents": 3000,
                "properties": {"amount": "0.01"},
            }
        ],
    }
    minimum = Plan.model_validate(body)
    draft = rate_subscription(sub(), minimum, CUSTOMER, april(), {("calls", None): D(1234)})
    assert fee(draft, "charge", "calls").amount == D("12.34")
    true_up = fee(draft, "true_up", "calls")
    assert true_up.amount == D("17.66")
    assert fee(draft, "charge", "calls").amount + true_up.amount == D("30.00")
    late = sub(subscription_at=utc(2024, 4, 16, 12), started_at=utc(2024, 4, 16, 12))  # 15 of 30 days
    assert fee(rate_subscription(late, minimum, CUSTOMER, april(late), {}), "true_up", "calls").amount == D("15.00")
    draft = rate_subscription(sub(), minimum, CUSTOMER, april(), {("calls", None): D(5000)})
    assert [f.ref.kind for f in draft.fees] == ["subscription", "charge"]


def test_percentage_charge_with_per_event_values():
    body = {
        **HYBRID,
        "charges": [
            {
                "billable_metric_code": "payments",
                "charge_model": "percentage",
                "properties": {"rate": "2.9", "fixed_amount": "0.30", "free_units_per_events": 1},
            }
        ],
    }
    payments = Plan.model_validate(body)
    usage = {("payments", None): ChargeUsage(event_values=(D("100"), D("50"), D("20")))}
    charge_fee = fee(rate_subscription(sub(), payments, CUSTOMER, april(), usage), "charge", "payments")
    assert charge_fee.precise_amount == D("70") * D("0.029") + 2 * D("0.30")
    assert charge_fee.amount == D("2.63")
    assert charge_fee.events_count == 3


def test_metric_rounding_is_applied_when_metrics_are_given():
    body = {
        **HYBRID,
        "charges": [{"billable_metric_code": "gb", "charge_model": "standard", "properties": {"amount": "1"}}],
    }
    storage = Plan.model_validate(body)
    metric = BillableMetric(
        code="gb", name="GB", aggregation_type="sum", field_name="gb", rounding_function="ceil", rounding_precision=0
    )
    draft = rate_subscription(sub(), storage, CUSTOMER, april(), {("gb", None): D("10.2")}, metrics={"gb": metric})
    assert fee(draft, "charge", "gb").units == 11


def test_currency_of_customer_and_plan_must_agree():
    with pytest.raises(ValueError, match="EUR"):
        rate_subscription(sub(), plan(), CUSTOMER.model_copy(update={"currency": "EUR"}), april(), {})


def test_zero_decimal_currency_rounds_to_whole_yen():
    yen = plan(amount_currency="JPY", amount_cents=4900)
    draft = rate_subscription(
        sub(),
        yen,
        Customer(external_id="jp", timezone="Asia/Tokyo"),
        april(the_plan=yen),
        {("tokens", OUTPUT): D(125_000)},
    )
    assert fee(draft, "charge", "tokens", OUTPUT).amount == D(2)  # 0.5 + 1 = 1.5 -> 2 (half up)
    assert fee(draft, "subscription").amount_cents == 4900


def test_fee_references_are_stable_and_fit_stripe():
    usage = {("seats", None): SEATS, ("tokens", INPUT): D(1)}
    first = rate_subscription(sub(), plan(), CUSTOMER, april(), usage)
    again = rate_subscription(sub(), plan(), CUSTOMER, april(), usage)
    assert [f.ref.idempotency_key for f in first.fees] == [f.ref.idempotency_key for f in again.fees]
    assert fee(first, "charge", "tokens", INPUT).ref.key == f"sub_1|team|2024-04-01|2024-04-30|charge|tokens|{INPUT}"
    long_ref = FeeRef("s" * 200, date(2024, 4, 1), date(2024, 4, 30), "charge", "c", "k=" + "v" * 200, "p")
    other = FeeRef("s" * 200, date(2024, 4, 1), date(2024, 4, 30), "charge", "c", "k=" + "v" * 199 + "w", "p")
    assert len(long_ref.idempotency_key) <= 255 and long_ref.idempotency_key != other.idempotency_key
    assert len(long_ref.tier_key(3)) <= 255


def test_in_advance_event_pays_the_difference_and_the_first_flat_fee():
    props = plan().charges[1].filters[1].properties  # 0.000004 per token + 1 flat
    first = price_in_advance_event(props, ChargeUsage(D(0)), ChargeUsage(D(1000)))
    assert first.precise_amount == D("1.004")
    second = price_in_advance_event(props, ChargeUsage(D(1000)), ChargeUsage(D(2000)))
    assert second.precise_amount == D("0.004")


@given(
    st.decimals(min_value=0, max_value=10**8, places=0),
    st.decimals(min_value=0, max_value=10**8, places=0),
    st.integers(min_value=0, max_value=40),
)
def test_invoice_total_is_the_sum_of_fees_rounded_once(tokens_in, tokens_out, seats):
    usage = {
        ("tokens", INPUT): tokens_in,
        ("tokens", OUTPUT): tokens_out,
        ("seats", None): ChargeUsage(
            seat_events=tuple(SeatEvent(f"u{i}", "add", utc(2024, 4, 1 + i % 30, 12)) for i in range(seats))
        ),
    }
    draft = rate_subscription(sub(), plan(), CUSTOMER, april(), usage)
    assert draft.amount_cents == sum(f.amount_cents for f in draft.fees)
    for f in draft.fees:
        assert f.amount == round_money(f.precise_amount, "USD")
        with money_context():
            assert f.precise_amount == sum((d.amount for d in f.details), D(0))


def test_period_containing_matches_rating_period():
    schedule = BillingSchedule.of(sub(), plan(), CUSTOMER)
    assert period_containing(schedule, utc(2024, 4, 30, 23)) == april()  # 19:00 in New York


@given(
    st.integers(min_value=0, max_value=25),
    st.sampled_from(["UTC", "America/New_York", "Europe/Berlin", "Etc/GMT+12", "Pacific/Kiritimati"]),
    st.sampled_from(["calendar", "anniversary"]),
    st.integers(min_value=1, max_value=12),
)
def test_seats_present_all_period_cost_their_full_price(seats, tz, billing_time, month):
    customer = Customer(external_id="c", currency="USD", timezone=tz)
    subscription = sub(billing_time=billing_time, subscription_at=utc(2023, 1, 31, 12), started_at=utc(2023, 1, 31, 12))
    period = period_containing(BillingSchedule.of(subscription, plan(), customer), utc(2024, month, 15))
    events = tuple(SeatEvent(f"u{i}", "add", utc(2023, 6, 1) if i % 2 else period.start_utc) for i in range(seats))
    draft = rate_subscription(
        subscription, plan(), customer, period, {("seats", None): ChargeUsage(seat_events=events)}
    )
    seat_fee = fee(draft, "charge", "seats")
    assert seat_fee.units == seats
    assert seat_fee.amount == 20 * seats
