"""Catalog models: Lago bodies in, Lago-shaped dicts out, Lago-style 422 details on errors."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from meterline.core.catalog import (
    BillableMetric,
    Charge,
    Customer,
    Plan,
    Subscription,
    filter_key,
    lago_error_details,
)
from meterline.core.pricing.charge_models import GraduatedProperties, PercentageProperties

D = Decimal


def errors_of(model, body):
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return lago_error_details(info.value)


def ranges(*rows):
    return [{"from_value": f, "to_value": t, "per_unit_amount": u, "flat_amount": fl} for f, t, u, fl in rows]


LAGO_PLAN = {
    "name": "Startup",
    "code": "startup",
    "interval": "monthly",
    "amount_cents": 10000,
    "amount_currency": "USD",
    "pay_in_advance": True,
    "trial_period": 14,
    "charges": [
        {
            "billable_metric_code": "tokens",
            "charge_model": "graduated",
            "invoice_display_name": "LLM tokens",
            "properties": {"graduated_ranges": ranges((0, 10, "10", "2"), (11, 20, "5", "3"), (21, None, "5", "3"))},
            "filters": [
                {
                    "invoice_display_name": "GPT-4 input",
                    "properties": {"graduated_ranges": ranges((0, None, "0.00003", "0"))},
                    "values": {"model": ["gpt-4"], "token_type": ["input"]},
                }
            ],
        },
        {
            "billable_metric_id": "bm_seats",
            "charge_model": "standard",
            "prorated": True,
            "properties": {"amount": "20"},
        },
        {
            "billable_metric_code": "storage",
            "charge_model": "package",
            "properties": {"amount": "5", "free_units": 100, "package_size": 100},
        },
        {
            "billable_metric_code": "payments",
            "charge_model": "percentage",
            "min_amount_cents": 500,
            "properties": {
                "rate": "1.5",
                "fixed_amount": "0.1",
                "free_units_per_events": 3,
                "per_transaction_max_amount": "10",
            },
        },
        {
            "billable_metric_code": "gpus",
            "charge_model": "volume",
            "properties": {"volume_ranges": ranges((0, 100, "2", "10"), (101, None, "1", "0"))},
        },
        {
            "billable_metric_code": "volume_usd",
            "charge_model": "graduated_percentage",
            "properties": {
                "graduated_percentage_ranges": [{"from_value": 0, "to_value": None, "rate": "1", "flat_amount": "0"}]
            },
        },
    ],
}


def test_plan_from_lago_body_round_trips():
    plan = Plan.model_validate(LAGO_PLAN)
    tokens = plan.charges[0]
    assert isinstance(tokens.properties, GraduatedProperties)
    assert tokens.properties.graduated_ranges[1].per_unit_amount == D(5)
    assert tokens.filters[0].key == "model=gpt-4;token_type=input"
    assert isinstance(plan.charges[3].properties, PercentageProperties)
    assert plan.charges[1].ref == "bm_seats"
    body = plan.to_lago()
    assert body["charges"][0]["properties"]["graduated_ranges"][0] == {
        "from_value": "0",
        "to_value": "10",
        "per_unit_amount": "10",
        "flat_amount": "2",
    }
    assert "charge_model" not in body["charges"][0]["properties"]  # Lago's shape, not our tag
    assert Plan.model_validate(body) == plan


def test_models_are_frozen():
    plan = Plan.model_validate(LAGO_PLAN)
    with pytest.raises(ValidationError):
        plan.amount_cents = 1


def test_yearly_amount_compares_intervals():
    weekly = Plan.model_validate({**LAGO_PLAN, "interval": "weekly", "amount_cents": 100})
    yearly = Plan.model_validate({**LAGO_PLAN, "interval": "yearly", "amount_cents": 5200})
    assert weekly.yearly_amount_cents == yearly.yearly_amount_cents == 5200


def test_lago_error_details_codes():
    body = {
        "code": "p",
        "interval": "daily",
        "amount_cents": 1.5,
        "amount_currency": "XXX",
        "bill_charges_monthly": True,
        "charges": [
            {"charge_model": "standard", "properties": {"amount": 0.5}},
            {"billable_metric_code": "a", "charge_model": "nope", "properties": {}},
            {"billable_metric_code": "b", "charge_model": "package", "properties": {"amount": "x", "package_size": 0}},
        ],
    }
    assert errors_of(Plan, body) == {
        "name": ["value_is_mandatory"],
        "interval": ["invalid_value"],
        "amount_cents": ["invalid_type"],
        "amount_currency": ["invalid_value"],
        "bill_charges_monthly": ["unknown_field"],
        "charges.0.billable_metric_code": ["value_is_mandatory"],
        "charges.0.properties.amount": ["invalid_type"],
        "charges.1.charge_model": ["invalid_value"],
        "charges.2.properties.amount": ["invalid_format"],
        "charges.2.properties.package_size": ["invalid_value"],
    }


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([], "missing_graduated_ranges"),
        ([(1, None, "1", "0")], "invalid_graduated_ranges"),  # must start at 0
        ([(0, 10, "1", "0"), (12, None, "1", "0")], "invalid_graduated_ranges"),  # gap
        ([(0, None, "1", "0"), (11, None, "1", "0")], "invalid_graduated_ranges"),  # open middle
        ([(0, 10, "1", "0")], "invalid_graduated_ranges"),  # closed last
        ([(0, 10, "1", "0"), (11, 9, "1", "0"), (10, None, "1", "0")], "invalid_graduated_ranges"),
        ([(0, 10, "-1", "0"), (11, None, "1", "0")], "invalid_amount"),
    ],
)
def test_graduated_range_validation(rows, code):
    body = {"billable_metric_code": "m", "charge_model": "graduated", "properties": {"graduated_ranges": ranges(*rows)}}
    details = errors_of(Charge, body)
    assert code in [c for codes in details.values() for c in codes], details


@pytest.mark.parametrize(
    "rows",
    [
        [(0, 10, "1", "0"), (11, 20, "1", "0"), (21, None, "1", "0")],  # Lago's integer tiers
        [(0, "0.1", "10", "0"), ("0.1", 1, "5", "0"), (1, None, "2", "0")],  # adjacent decimals
        [(0, None, "1", "0")],
    ],
)
def test_valid_ranges(rows):
    Charge.model_validate(
        {"billable_metric_code": "m", "charge_model": "volume", "properties": {"volume_ranges": ranges(*rows)}}
    )


def test_range_bounds_accept_json_floats_exactly():
    charge = Charge.model_validate(
        {
            "billable_metric_code": "m",
            "charge_model": "graduated",
            "properties": {"graduated_ranges": ranges((0, 0.1, "1", "0"), (0.1, None, "1", "0"))},
        }
    )
    assert charge.properties.graduated_ranges[0].to_value == D("0.1")


def test_range_error_is_keyed_on_the_ranges_field():
    body = {
        "billable_metric_code": "m",
        "charge_model": "graduated",
        "properties": {"graduated_ranges": ranges((1, None, "1", "0"))},
    }
    assert errors_of(Charge, body) == {"properties.graduated_ranges": ["invalid_graduated_ranges"]}


def test_percentage_min_above_max_is_invalid():
    body = {
        "billable_metric_code": "m",
        "charge_model": "percentage",
        "properties": {"rate": "1", "per_transaction_min_amount": "5", "per_transaction_max_amount": "1"},
    }
    assert errors_of(Charge, body) == {"properties": ["invalid_value"]}


def test_prorated_graduated_is_refused():
    body = {
        "billable_metric_code": "m",
        "charge_model": "graduated",
        "prorated": True,
        "properties": {"graduated_ranges": ranges((0, None, "1", "0"))},
    }
    assert errors_of(Charge, body) == {"base": ["invalid_prorated_charge_model"]}


def test_a_pay_in_advance_charge_is_refused_not_left_unbilled():
    body = {"billable_metric_code": "m", "charge_model": "standard", "properties": {"amount": "1"}}
    assert errors_of(Charge, {**body, "pay_in_advance": True}) == {"pay_in_advance": ["value_is_not_supported"]}
    assert Charge.model_validate({**body, "pay_in_advance": False}).pay_in_advance is False


def test_duplicate_charges_and_filters_are_refused():
    charge = {"billable_metric_code": "m", "charge_model": "standard", "properties": {"amount": "1"}}
    assert errors_of(Plan, {**LAGO_PLAN, "charges": [charge, charge]}) == {"charges": ["duplicated_charge"]}
    flt = {"values": {"a": ["1", "2"]}, "properties": {"amount": "1"}}
    swapped = {"values": {"a": ["2", "1"]}, "properties": {"amount": "2"}}
    assert errors_of(Charge, {**charge, "filters": [flt, swapped]}) == {"base": ["duplicated_filters"]}


def test_filter_key_is_order_independent():
    assert filter_key({"b": ["y", "x"], "a": ["1"]}) == filter_key({"a": ["1"], "b": ["x", "y"]}) == "a=1;b=x,y"


def test_billable_metric_aggregation_and_field_name():
    count = BillableMetric.model_validate({"code": "calls", "name": "Calls", "aggregation_type": "count_agg"})
    assert count.aggregation_type == "count" and count.field_name is None
    assert count.to_lago()["aggregation_type"] == "count_agg"
    weighted = BillableMetric.model_validate(
        {"code": "gb", "name": "GB", "aggregation_type": "weighted_sum", "field_name": "gb"}
    )
    assert weighted.weighted_interval == "seconds"
    seats = BillableMetric.model_validate(
        {
            "code": "seats",
            "name": "Seats",
            "aggregation_type": "unique_count_agg",
            "field_name": "user_id",
            "recurring": True,
        }
    )
    assert seats.recurring
    assert errors_of(BillableMetric, {"code": "t", "name": "T", "aggregation_type": "sum_agg"}) == {
        "field_name": ["value_is_mandatory"]
    }
    assert errors_of(
        BillableMetric, {"code": "t", "name": "T", "aggregation_type": "max_agg", "field_name": "x", "recurring": True}
    ) == {"recurring": ["invalid_recurring"]}
    assert errors_of(BillableMetric, {"code": "t", "name": "T", "aggregation_type": "median", "field_name": "x"}) == {
        "aggregation_type": ["invalid_value"]
    }


@pytest.mark.parametrize(
    ("function", "precision", "units", "expected"),
    [
        ("round", 2, "1.005", "1.01"),
        ("ceil", 0, "1.01", "2"),
        ("floor", 0, "1.99", "1"),
        ("round", -1, "15", "2E+1"),
        (None, None, "1.234", "1.234"),
    ],
)
def test_metric_rounding(function, precision, units, expected):
    metric = BillableMetric(
        code="m",
        name="m",
        aggregation_type="sum",
        field_name="v",
        rounding_function=function,
        rounding_precision=precision,
    )
    assert metric.round_units(D(units)) == D(expected)


def test_customer_timezone_is_validated():
    customer = Customer.model_validate(
        {
            "external_id": "c1",
            "currency": "EUR",
            "timezone": "Europe/Berlin",
            "billing_configuration": {"invoice_grace_period": 3},
        }
    )
    assert customer.zone.key == "Europe/Berlin"
    assert Customer(external_id="c2").timezone == "UTC"
    assert errors_of(Customer, {"external_id": "c", "timezone": "Mars/Olympus"}) == {"timezone": ["invalid_timezone"]}
    assert errors_of(Customer, {"external_id": "c", "country": "fr"}) == {"country": ["invalid_format"]}


def test_subscription_datetimes_are_aware_and_utc():
    sub = Subscription.model_validate(
        {
            "external_id": "s",
            "external_customer_id": "c",
            "plan_code": "p",
            "billing_time": "anniversary",
            "subscription_at": "2024-01-31T10:00:00+02:00",
        }
    )
    assert sub.subscription_at == datetime(2024, 1, 31, 8, tzinfo=UTC)
    assert sub.to_lago()["subscription_at"] == "2024-01-31T08:00:00Z"
    assert sub.start == sub.subscription_at and sub.end is None
    base = {"external_id": "s", "external_customer_id": "c", "plan_code": "p"}
    assert errors_of(Subscription, {**base, "subscription_at": "2024-01-31T10:00:00"}) == {
        "subscription_at": ["invalid_format"]
    }
    assert errors_of(Subscription, {**base, "subscription_at": "yesterday"}) == {"subscription_at": ["invalid_format"]}
    assert errors_of(Subscription, {**base, "subscription_at": "2024-01-31T00:00:00Z", "status": "terminated"}) == {
        "base": ["value_is_mandatory"]
    }
    assert errors_of(Subscription, {**base, "subscription_at": "2024-01-31T00:00:00Z", "billing_time": "weekly"}) == {
        "billing_time": ["invalid_value"]
    }


def test_model_copy_forgets_cached_properties():
    customer = Customer(external_id="c", timezone="UTC")
    assert customer.zone.key == "UTC"
    assert customer.model_copy(update={"timezone": "Europe/Paris"}).zone.key == "Europe/Paris"
    plan = Plan.model_validate(LAGO_PLAN)
    assert plan.amount == D("100.00")
    assert plan.model_copy(update={"amount_cents": 250}).amount == D("2.50")
