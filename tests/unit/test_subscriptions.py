"""Plan changes, terminations and due downgrades (`meterline.core.subscriptions`), rated where
the rule is about what gets billed."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from meterline.core.catalog import Customer, Plan
from meterline.core.money import money_context
from meterline.core.pricing.periods import BillingSchedule, next_period, period_for_date
from meterline.core.pricing.rating import rate_subscription
from meterline.core.subscriptions import (
    SubscriptionCreate,
    SubscriptionHistory,
    apply_due_downgrades,
    plan_subscription,
    terminate_records,
)

D = Decimal
CUSTOMER = Customer(external_id="acme", currency="USD", timezone="America/New_York")
ZONE = CUSTOMER.zone


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def priced(code, amount_cents, interval="monthly"):
    return Plan.model_validate(
        {
            "code": code,
            "name": code.title(),
            "interval": interval,
            "amount_cents": amount_cents,
            "amount_currency": "USD",
            "charges": [
                {"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "20"}},
                {"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.01"}},
            ],
        }
    )


PLANS = {
    p.code: p
    for p in (
        priced("team", 4900),
        priced("scale", 9900),
        priced("solo", 900),
        priced("mini", 500),
        priced("team_yearly", 4900 * 12, "yearly"),
    )
}
SUBSCRIBED = utc(2024, 1, 1, 5)  # Jan 1 00:00 in New York
APR_11 = utc(2024, 4, 11, 15)  # Apr 11, 11:00 in New York
MAY_1 = utc(2024, 5, 1, 4)  # May 1 00:00 in New York: the period boundary


def change(records, plan_code, now):
    """plan_subscription for a request putting sub_1 on `plan_code` at `now`."""
    request = SubscriptionCreate(external_customer_id="acme", plan_code=plan_code, external_id="sub_1")
    history = SubscriptionHistory("sub_1", tuple(records), len(records))
    return plan_subscription(history, request, PLANS[plan_code], CUSTOMER, PLANS.get, now)


def on_team():
    """sub_1 created on team at SUBSCRIBED, through the rule itself."""
    records, _ = change([], "team", SUBSCRIBED)
    return records


def april(record):
    schedule = BillingSchedule.of(record, PLANS[record.plan_code], CUSTOMER)
    return period_for_date(schedule, date(2024, 4, 1))


def rate(record, period):
    return rate_subscription(record, PLANS[record.plan_code], CUSTOMER, period, {})


def close(precise, numerator, denominator):
    """precise equals numerator / denominator to 40 decimals (proration ratios are 50-digit)."""
    with money_context():
        return abs(precise - D(numerator) / D(denominator)) < D("1e-40")


def base_fee(draft):
    (found,) = [f for f in draft.fees if f.ref.kind == "subscription"]
    return found


def test_upgrade_rates_old_plan_to_the_switch_day_and_new_plan_from_it():
    records, answer = change(on_team(), "scale", APR_11)
    old, new = records
    assert answer == new
    assert old.status == "terminated" and old.terminated_at == APR_11 and old.next_plan_code == "scale"
    assert new.status == "active" and new.started_at == APR_11
    assert new.plan_code == "scale" and new.previous_plan_code == "team"
    assert new.subscription_at == SUBSCRIBED  # anniversary and trial carry over
    period = april(old)
    old_draft, new_draft = rate(old, period), rate(new, period)
    assert close(base_fee(old_draft).precise_amount, 49 * 10, 30)  # Apr 1-10
    assert close(base_fee(new_draft).precise_amount, 99 * 20, 30)  # Apr 11-30
    keys = {f.ref.idempotency_key for f in (*old_draft.fees, *new_draft.fees)}
    assert len(keys) == len(old_draft.fees) + len(new_draft.fees) == 6  # same external_id, no key collides
    # The upgraded-from record keeps next_plan_code but is no downgrade waiting to happen.
    assert apply_due_downgrades(records, MAY_1, ZONE) is None


def test_a_plan_at_the_same_yearly_price_is_an_upgrade():
    (old, new), _ = change(on_team(), "team_yearly", APR_11)
    assert old.status == "terminated" and new.status == "active" and new.started_at == APR_11


def test_downgrade_waits_for_the_end_of_the_period():
    records, answer = change(on_team(), "solo", APR_11)
    current, pending = records
    assert answer == current
    assert current.status == "active" and current.terminated_at is None
    assert current.next_plan_code == "solo" and current.downgrade_plan_date == date(2024, 5, 1)
    assert pending.status == "pending" and pending.started_at is None
    assert pending.plan_code == "solo" and pending.previous_plan_code == "team"
    assert base_fee(rate(current, april(current))).amount == D("49.00")  # the full current period

    old, new = apply_due_downgrades(records, MAY_1, ZONE)
    assert old.status == "terminated" and new.status == "active"
    assert old.terminated_at == new.started_at == MAY_1
    assert old.next_plan_code == "solo"  # billed as a switch, not as a plain termination
    assert base_fee(rate(old, april(old))).amount == D("49.00")  # still the full April
    may = next_period(BillingSchedule.of(new, PLANS["solo"], CUSTOMER), april(new))
    assert base_fee(rate(new, may)).amount == D("9.00")
    assert rate(old, may).fees == ()


def test_due_downgrade_switches_at_the_local_boundary_once():
    records, _ = change(on_team(), "solo", APR_11)
    # Apr 30 23:00 in New York is already May 1 in UTC: not due yet.
    assert apply_due_downgrades(records, utc(2024, 5, 1, 3), ZONE) is None
    assert apply_due_downgrades(records, MAY_1 - timedelta(seconds=1), ZONE) is None
    at_boundary = apply_due_downgrades(records, MAY_1, ZONE)
    late = apply_due_downgrades(records, utc(2024, 5, 3, 12), ZONE)
    # A late run still switches at the boundary, so no day is billed on the wrong plan.
    assert at_boundary == late
    assert [(r.plan_code, r.status) for r in late] == [("team", "terminated"), ("solo", "active")]
    assert late[0].terminated_at == late[1].started_at == MAY_1
    assert apply_due_downgrades(late, utc(2024, 5, 3, 12), ZONE) is None
    assert apply_due_downgrades(late, utc(2024, 6, 1, 4), ZONE) is None


def test_due_downgrade_without_its_pending_record_is_refused():
    records, _ = change(on_team(), "solo", APR_11)
    with pytest.raises(ValueError, match="no pending record"):
        apply_due_downgrades(records[:1], MAY_1, ZONE)


def test_the_same_request_twice_changes_nothing():
    team = on_team()
    assert change(team, "team", APR_11) == (None, team[0])
    scheduled, current = change(team, "solo", APR_11)
    # Asking for the downgrade again, or for the plan it runs on, is the same request.
    assert change(scheduled, "solo", utc(2024, 4, 12)) == (None, current)
    assert change(scheduled, "team", utc(2024, 4, 12)) == (None, current)


def test_a_new_change_replaces_a_scheduled_downgrade():
    scheduled, _ = change(on_team(), "solo", APR_11)
    later = utc(2024, 4, 20, 12)

    records, answer = change(scheduled, "scale", later)  # an upgrade
    old, canceled, new = records
    assert canceled.plan_code == "solo" and canceled.status == "canceled" and canceled.canceled_at == later
    assert old.status == "terminated" and old.terminated_at == later
    assert old.next_plan_code == "scale" and old.downgrade_plan_date is None
    assert answer == new and new.plan_code == "scale" and new.started_at == later
    assert apply_due_downgrades(records, MAY_1, ZONE) is None

    records, answer = change(scheduled, "mini", later)  # another downgrade
    current, canceled, pending = records
    assert canceled.plan_code == "solo" and canceled.status == "canceled"
    assert answer == current and current.next_plan_code == "mini" and current.downgrade_plan_date == date(2024, 5, 1)
    assert pending.plan_code == "mini" and pending.status == "pending"
    _, _, started = apply_due_downgrades(records, MAY_1, ZONE)
    assert started.plan_code == "mini" and started.status == "active"


def test_terminating_the_pending_record_unschedules_the_downgrade():
    scheduled, _ = change(on_team(), "solo", APR_11)
    history = SubscriptionHistory("sub_1", tuple(scheduled), 2)
    later = utc(2024, 4, 20, 12)
    (current, canceled), answer = terminate_records(history, "pending", later)
    assert answer == canceled and canceled.status == "canceled" and canceled.canceled_at == later
    assert current.status == "active" and current.next_plan_code is None and current.downgrade_plan_date is None
    assert apply_due_downgrades([current, canceled], MAY_1, ZONE) is None
    # With nothing scheduled, the current plan is billed on into May.
    may = next_period(BillingSchedule.of(current, PLANS["team"], CUSTOMER), april(current))
    assert base_fee(rate(current, may)).amount == D("49.00")
