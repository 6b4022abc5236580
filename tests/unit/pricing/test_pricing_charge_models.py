"""Charge models: boundary tables (0, 1, each tier edge and one past it) and properties."""

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.catalog import Charge, ChargeModelName
from meterline.core.money import round_money
from meterline.core.pricing.charge_models import CHARGE_MODELS, price
from meterline.core.pricing.fee import ChargeResult, FeeRef, make_fee
from meterline.core.pricing.usage import ChargeUsage

D = Decimal


def props(model, properties):
    return Charge.model_validate(
        {"billable_metric_code": "m", "charge_model": model, "properties": properties}
    ).properties


def ranges(*rows, rate=False):
    key = "rate" if rate else "per_unit_amount"
    return [{"from_value": f, "to_value": t, key: u, "flat_amount": fl} for f, t, u, fl in rows]


def amount(properties, units=None, **usage):
    if units is not None:
        usage["units"] = D(units)
    return price(properties, ChargeUsage(**usage)).precise_amount


def assert_consistent(result: ChargeResult):
    """A fee equals the sum of its details, and each detail is units * price + flat."""
    assert result.precise_amount == sum((d.amount for d in result.details), D(0))
    for detail in result.details:
        assert detail.amount == detail.units * detail.per_unit_amount + detail.flat_amount


def test_registry_has_one_entry_per_model():
    assert set(CHARGE_MODELS) == set(get_args(ChargeModelName))  # the catalog accepts exactly what pricing prices
    assert len(CHARGE_MODELS) == 6
    assert all(model.name == name for name, model in CHARGE_MODELS.items())


# --- standard ---------------------------------------------------------------------------

STANDARD = props("standard", {"amount": "0.0015"})


@pytest.mark.parametrize(
    ("units", "expected"), [("0", "0"), ("1", "0.0015"), ("1000", "1.5"), ("-5", "0"), ("2.5", "0.00375")]
)
def test_standard(units, expected):
    assert amount(STANDARD, units) == D(expected)


# --- graduated (Lago's own example) ---------------------------------------------------------

GRADUATED = props(
    "graduated", {"graduated_ranges": ranges((0, 10, "10", "2"), (11, 20, "5", "3"), (21, None, "5", "3"))}
)


@pytest.mark.parametrize(
    ("units", "expected"),
    [
        (0, 2),  # the first range's flat fee even at zero usage
        (1, 12),
        (10, 102),  # top of tier 1
        (11, 110),  # one past: tier 2's flat fee + 1 unit
        (12, 115),
        (20, 155),  # top of tier 2
        (21, 163),  # one past: tier 3's flat fee + 1 unit
        (100, 558),
        ("10.5", "107.5"),  # 0.5 units enter tier 2, which charges its flat fee (Lago)
        (-3, 2),  # negative units clamp to 0
    ],
)
def test_graduated_lago_example(units, expected):
    result = price(GRADUATED, ChargeUsage(D(units)))
    assert result.precise_amount == D(expected)
    assert_consistent(result)


def test_graduated_details_per_tier():
    result = price(GRADUATED, ChargeUsage(D(21)))
    assert [(d.from_value, d.to_value, d.units, d.amount) for d in result.details] == [
        (0, 10, 10, 102),
        (11, 20, 10, 53),
        (21, None, 1, 8),
    ]


def test_graduated_adjacent_decimal_ranges():
    adjacent = props(
        "graduated", {"graduated_ranges": ranges((0, "0.1", "10", "0"), ("0.1", 1, "5", "0"), (1, None, "2", "0"))}
    )
    assert amount(adjacent, "0.05") == D("0.5")
    assert amount(adjacent, "0.5") == D("3.0")  # 0.1 * 10 + 0.4 * 5
    assert amount(adjacent, "3") == D("9.5")  # 0.1 * 10 + 0.9 * 5 + 2 * 2


def test_graduated_zero_first_flat_costs_nothing_at_zero():
    free_tier = props("graduated", {"graduated_ranges": ranges((0, 100, "0", "0"), (101, None, "0.01", "5"))})
    assert amount(free_tier, 0) == 0
    assert amount(free_tier, 100) == 0
    assert amount(free_tier, 101) == D("5.01")


# --- volume ----------------------------------------------------------------------------------

VOLUME = props("volume", {"volume_ranges": ranges((0, 100, "2", "10"), (101, 200, "1", "0"), (201, None, "0.5", "50"))})


@pytest.mark.parametrize(
    ("units", "expected"),
    [(0, 10), (1, 12), (100, 210), ("100.5", "100.5"), (101, 101), (200, 200), (201, "150.5"), (300, 200), (-5, 10)],
)
def test_volume(units, expected):
    result = price(VOLUME, ChargeUsage(D(units)))
    assert result.precise_amount == D(expected)
    assert_consistent(result)


def test_volume_prorated_units_priced_at_the_full_quantity_tier():
    # Lago: 198.6 prorated units of 300 full units -> tier 201+: 198.6 * 0.5 + 50
    assert price(VOLUME, ChargeUsage(D("198.6"), full_units=D(300))).precise_amount == D("149.3")


# --- package ---------------------------------------------------------------------------------

PACKAGE = props("package", {"amount": "5", "free_units": 100, "package_size": 100})


@pytest.mark.parametrize(
    ("units", "expected"),
    [(0, 0), (1, 0), (100, 0), (101, 5), (200, 5), (201, 10), ("200.5", 10), (-1, 0)],
)
def test_package_with_free_units(units, expected):
    result = price(PACKAGE, ChargeUsage(D(units)))
    assert result.precise_amount == D(expected)
    assert_consistent(result)


@pytest.mark.parametrize(("units", "expected"), [(0, 0), (1, 100), (10, 100), (11, 200), (121, 1300)])
def test_package_lago_example(units, expected):
    package = props("package", {"amount": "100", "package_size": 10})
    assert amount(package, units) == expected


# --- percentage -------------------------------------------------------------------------------

EVENTS = tuple(D(v) for v in ("50", "100", "250", "400"))


def percentage(**extra):
    return props("percentage", {"rate": "1.3", "fixed_amount": "2.0", **extra})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, "18.4"),  # 800 * 1.3% + 4 * 2
        ({"free_units_per_events": 3, "free_units_per_total_aggregation": "250.0"}, "11.15"),  # 550 * 1.3% + 2 * 2
        ({"free_units_per_total_aggregation": "250.0"}, "11.15"),
        ({"free_units_per_events": 3}, "7.2"),  # 400 * 1.3% + 1 * 2
        ({"free_units_per_events": 3, "free_units_per_total_aggregation": "500.0"}, "7.2"),
        ({"free_units_per_events": 5}, "0"),
    ],
)
def test_percentage_free_units_lago_cases(extra, expected):
    result = price(percentage(**extra), ChargeUsage(event_values=EVENTS))
    assert result.precise_amount == D(expected)
    assert result.units == 800
    assert_consistent(result)


MINMAX_EVENTS = (D(10), D(80), D(10000))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"fixed_amount": "0"}, "16.142"),  # 1.75 (min) + 2.392 + 12 (max)
        ({"fixed_amount": "2.0"}, "18.691"),  # 2.299 + 4.392 + 12
        ({"fixed_amount": "0", "free_units_per_events": 2}, "12"),
        ({"fixed_amount": "0", "free_units_per_total_aggregation": "30"}, "13.794"),  # 60 * 2.99% + 12
        ({"fixed_amount": "0", "free_units_per_events": 3, "free_units_per_total_aggregation": "10000"}, "2.691"),
    ],
)
def test_percentage_per_transaction_min_max_lago_cases(extra, expected):
    properties = props(
        "percentage",
        {"rate": "2.99", "per_transaction_min_amount": "1.75", "per_transaction_max_amount": "12", **extra},
    )
    result = price(properties, ChargeUsage(event_values=MINMAX_EVENTS))
    assert result.precise_amount == D(expected)
    assert_consistent(result)


def test_percentage_simple_form_needs_only_units_and_count():
    assert amount(percentage(), 800, events_count=4) == D("18.4")
    assert amount(props("percentage", {"rate": "2.9"}), 4) == D("0.116")
    assert amount(percentage(), 0, events_count=4) == 0  # no fixed fee on a zero total (Lago)
    assert amount(percentage(), 1, events_count=0) == D("0.013")


def test_percentage_refuses_missing_inputs():
    with pytest.raises(ValueError, match="events_count"):
        amount(percentage(), 800)
    with pytest.raises(ValueError, match="event_values"):
        amount(percentage(free_units_per_events=3), 800, events_count=4)


def test_percentage_zero_and_one_event():
    properties = percentage(per_transaction_min_amount="1")
    assert amount(properties, event_values=()) == 0
    assert amount(properties, event_values=(D(0),)) == 0
    assert amount(properties, event_values=(D(1),)) == D("2.013")
    assert amount(properties, event_values=(D(-50), D(100))) == D("5.3")  # the refund is clamped to 0


# --- graduated percentage ---------------------------------------------------------------------

GRAD_PCT = props(
    "graduated_percentage",
    {
        "graduated_percentage_ranges": ranges(
            (0, 10, "1", "200"), (11, 20, "2", "300"), (21, None, "3", "400"), rate=True
        )
    },
)


@pytest.mark.parametrize(
    ("units", "expected"),
    [(0, "0"), (1, "200.01"), (10, "200.1"), (11, "500.12"), (12, "500.14"), (20, "500.3"), (21, "900.33")],
)
def test_graduated_percentage_lago_cases(units, expected):
    result = price(GRAD_PCT, ChargeUsage(D(units)))
    assert result.precise_amount == D(expected)
    assert_consistent(result)
    assert result.details[0].rate == 1


# --- properties -------------------------------------------------------------------------------

units_st = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False, allow_infinity=False)
price_st = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False, allow_infinity=False)


@st.composite
def graduated_properties(draw):
    n = draw(st.integers(1, 5))
    bounds = sorted(draw(st.sets(st.integers(1, 10**6), min_size=n - 1, max_size=n - 1)))
    rows, lower = [], 0
    for i in range(n):
        upper = bounds[i] if i < n - 1 else None
        rows.append((lower if i == 0 else lower + 1, upper, str(draw(price_st)), str(draw(price_st))))
        lower = upper
    return props("graduated", {"graduated_ranges": ranges(*rows)})


@given(graduated_properties(), units_st, units_st)
def test_graduated_never_decreases_as_units_grow(properties, a, b):
    low, high = sorted((a, b))
    assert price(properties, ChargeUsage(low)).precise_amount <= price(properties, ChargeUsage(high)).precise_amount


@given(graduated_properties(), units_st)
def test_graduated_fee_is_the_sum_of_its_tiers(properties, units):
    result = price(properties, ChargeUsage(units))
    assert_consistent(result)
    assert sum((d.units for d in result.details), D(0)) == units


@given(graduated_properties(), units_st)
def test_rounding_happens_once_where_the_fee_is_made(properties, units):
    result = price(properties, ChargeUsage(units))
    ref = FeeRef("s", date(2024, 1, 1), date(2024, 1, 31), "charge", "m")
    fee = make_fee(ref, "USD", result, "m", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    assert fee.precise_amount == result.precise_amount  # kept unrounded
    assert fee.amount == round_money(result.precise_amount, "USD")
    assert fee.amount_cents == int(fee.amount * 100)
    # tiers are never pre-rounded: their exact sum is the precise amount, even below a cent
    assert result.precise_amount == sum((d.amount for d in result.details), D(0))


def test_sub_cent_tiers_are_not_rounded_per_tier():
    # three tiers of 0.004 each: rounding per tier gives 0.00, once gives 0.01
    tiny = props(
        "graduated", {"graduated_ranges": ranges((0, 1, "0.004", "0"), (2, 2, "0.004", "0"), (3, None, "0.004", "0"))}
    )
    result = price(tiny, ChargeUsage(D(3)))
    assert result.precise_amount == D("0.012")
    assert round_money(result.precise_amount, "USD") == D("0.01")
    three = price(tiny, ChargeUsage(D("3.75")))
    assert [d.amount for d in three.details] == [D("0.004"), D("0.004"), D("0.007")]
    assert round_money(three.precise_amount, "USD") == D("0.02")  # per-tier rounding would give 0.01


@given(
    st.sampled_from(["volume", "graduated_percentage", "package", "standard"]),
    units_st,
)
def test_every_model_is_consistent(model, units):
    properties = {"volume": VOLUME, "graduated_percentage": GRAD_PCT, "package": PACKAGE, "standard": STANDARD}[model]
    assert_consistent(price(properties, ChargeUsage(units)))


@given(
    st.lists(st.decimals(min_value=-100, max_value=10**5, places=2, allow_nan=False, allow_infinity=False), max_size=30)
)
def test_percentage_details_add_up(values):
    properties = percentage(
        free_units_per_events=2,
        free_units_per_total_aggregation="300",
        per_transaction_min_amount="1",
        per_transaction_max_amount="50",
    )
    result = price(properties, ChargeUsage(event_values=tuple(values)))
    assert_consistent(result)
    assert result.precise_amount >= 0


def test_fast_constructors_build_the_same_objects():
    from meterline.core.pricing.fee import ChargeResult, Fee, TierDetail, new_charge_result, new_fee_ref, new_tier_detail
    from meterline.core.pricing.usage import new_charge_usage

    z = D(0)
    assert new_tier_detail((z, None, z, z, z, z, "tier", None)) == TierDetail(z, None, z, z, z, z)
    assert type(new_tier_detail((z, None, z, z, z, z, "tier", None))) is TierDetail
    assert new_charge_result((z, z, ())) == ChargeResult(z, z)
    ref = FeeRef("s", date(2024, 1, 1), date(2024, 1, 31), "charge", "c", None, "p")
    assert new_fee_ref(tuple(ref)) == ref and new_fee_ref(tuple(ref)).key == ref.key
    assert new_charge_usage((D(3), None, None, None, None)) == ChargeUsage(D(3))
    # make_fee skips Fee.__init__ for speed; the result must be the same frozen dataclass
    t = datetime(2024, 1, 1, tzinfo=UTC)
    fee = make_fee(ref, "USD", ChargeResult(D(1), D("1.005"), ()), "x", t, t, 3)
    assert fee == Fee(ref, "USD", D(1), D("1.005"), D("1.01"), 101, (), "x", t, t, 3)
    assert repr(fee) == repr(Fee(ref, "USD", D(1), D("1.005"), D("1.01"), 101, (), "x", t, t, 3))
    with pytest.raises(AttributeError):
        fee.amount = D(2)


def test_apply_uses_the_money_context_whatever_the_caller_context():
    from decimal import localcontext

    thirds = props("standard", {"amount": "0.333333333333333333333333333333333333"})
    with localcontext() as ctx:
        ctx.prec = 5
        result = price(thirds, ChargeUsage(D(3)))
    assert result.precise_amount == D("0.999999999999999999999999999999999999")
