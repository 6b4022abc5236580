"""Money: parsing refuses floats, rounding is ROUND_HALF_UP to the ISO 4217 exponent."""

from decimal import Decimal, getcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterline.core.money import (
    currency_exponent,
    from_minor_units,
    money_context,
    parse_decimal,
    round_money,
    to_minor_units,
)

D = Decimal


@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("CLF", 4)],
)
def test_currency_exponents(currency, exponent):
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize("currency", ["XXX", "usd", "", None])
def test_unknown_currency_is_a_clear_value_error(currency):
    with pytest.raises(ValueError, match="unknown currency"):
        currency_exponent(currency)


@pytest.mark.parametrize(
    ("precise", "currency", "rounded"),
    [
        ("0.005", "USD", "0.01"),  # half up, not banker's rounding
        ("0.015", "USD", "0.02"),
        ("0.025", "USD", "0.03"),  # ROUND_HALF_EVEN would give 0.02
        ("0.0049999", "USD", "0.00"),
        ("-0.005", "USD", "-0.01"),  # half away from zero
        ("12.5", "JPY", "13"),
        ("1.0005", "KWD", "1.001"),
        ("163", "USD", "163.00"),
    ],
)
def test_round_money_half_up(precise, currency, rounded):
    assert str(round_money(D(precise), currency)) == rounded


def test_round_money_refuses_floats():
    with pytest.raises(TypeError):
        round_money(0.1, "USD")


def test_to_minor_units_is_exact_and_refuses_unrounded_amounts():
    assert to_minor_units(D("12.34"), "USD") == 1234
    assert to_minor_units(D("12.3"), "USD") == 1230
    assert to_minor_units(D("500"), "JPY") == 500
    assert to_minor_units(D("1.234"), "KWD") == 1234
    with pytest.raises(ValueError, match="round_money"):
        to_minor_units(D("12.345"), "USD")
    with pytest.raises(ValueError):
        to_minor_units(D("1.5"), "JPY")


def test_from_minor_units_round_trips():
    assert from_minor_units(1234, "USD") == D("12.34")
    assert from_minor_units(7, "JPY") == D("7")
    with pytest.raises(TypeError):
        from_minor_units(True, "USD")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", D(1)), ("0.1", D("0.1")), ("-2.50", D("-2.50")), (".5", D("0.5")), ("1e3", D(1000)), (7, D(7))],
)
def test_parse_decimal_accepts_strings_and_ints(text, value):
    assert parse_decimal(text) == value


@pytest.mark.parametrize("bad", [0.1, 1.0, True, None, [1]])
def test_parse_decimal_refuses_floats_and_other_types(bad):
    with pytest.raises(TypeError):
        parse_decimal(bad)


@pytest.mark.parametrize("bad", ["", "abc", "1_000", " 1", "NaN", "Infinity", "1.2.3"])
def test_parse_decimal_refuses_malformed_strings(bad):
    with pytest.raises(ValueError):
        parse_decimal(bad)


def test_money_context_does_not_touch_the_global_context():
    before = getcontext().prec
    with money_context():
        assert getcontext().prec == 50
        assert D(1) / D(3) == D("0." + "3" * 50)
    assert getcontext().prec == before


@given(st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False, places=6))
def test_rounding_is_idempotent_and_within_half_a_cent(value):
    rounded = round_money(value, "USD")
    assert round_money(rounded, "USD") == rounded
    assert abs(rounded - value) <= D("0.005")
    assert to_minor_units(rounded, "USD") == int(rounded * 100)


def test_money_context_nests_and_is_per_thread():
    import threading

    outer = getcontext()
    with money_context() as first:
        with money_context() as second:
            assert getcontext().prec == 50
        assert getcontext() is first and second is first  # one reused context per thread
    assert getcontext() is outer

    seen = []

    def worker():
        with money_context() as context:
            seen.append(context)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen[0] is not first and seen[0].prec == 50
