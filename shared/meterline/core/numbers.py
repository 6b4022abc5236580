"""The numeric domain: exactly which numbers Meterline stores and sums, and the one check.

A quantity (an event's `precise_total_amount_cents`, a property value a metric sums, a range
bound of a tiered price) is a decimal with

    at most 18 digits before the point   |x| < 10^18
    at most 9 digits after it            x * 10^9 is an integer (trailing zeros don't count)

Why these bounds:
- 9 places: BigQuery NUMERIC (and DuckDB's DECIMAL(38, 9), the warehouse's type) keeps 9
  digits after the point. A tenth digit would be rounded on the way in ("1.0000000005" stored
  as 1.000000001) or vanish ("0.0000000001" summed as 0), so it is refused instead.
- 10^18: NUMERIC holds |x| < 10^29, and a SUM over a period must fit too. With every value
  below 10^18, overflowing one (subscription, charge, period) sum takes more than 10^11 events
  at the maximum: at 10,000 events a second for one subscription, four months without pause.
  Integers this size also fit a signed 64-bit integer (BigQuery INT64, and what orjson writes).
  If a sum still fails, `services.usage.read_usage` isolates the window, so it fails alone.

Prices (a charge's amounts and rates) share the range but not the 9 places: nothing sums them
in the warehouse, pricing multiplies them in 50-digit arithmetic and rounds once per fee, and
per-token prices need more places ("0.0000000375" USD is $0.0375 per million tokens).

The usage SQL applies the same domain to what it reads (`adapters/sql/usage.py`): a stored value
outside it (sent before its metric existed, so ingest could not check it) is not a number to
a metric, just like "abc", and cannot make a sum overflow.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Final, cast

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_INTEGER_DIGITS",
    "PLACES",
    "STORED_NUMBER_SQL_PATTERN",
    "decimal_text",
    "number_error",
]

MAX_INTEGER_DIGITS: Final = 18  # |x| < 10^18
PLACES: Final = 9  # digits after the point that the warehouse keeps
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

NOT_A_NUMBER: Final = "value_is_not_valid_number"
OUT_OF_RANGE: Final = "value_is_out_of_range"
TOO_PRECISE: Final = "value_is_too_precise"

# Lago's numeric string (^-?\d+(\.\d+)?$), ASCII digits only: Python's \d also takes "٣",
# which Decimal reads but no warehouse CAST does.
_LAGO_NUMBER: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")

# The domain as a regular expression over Lago's numeric text: at most 18 significant integer
# digits, at most 9 places (then only zeros). The usage SQL tests stored text with it (RE2, in
# BigQuery and DuckDB alike), and `number_error` with it first, the usual case on ingest's hot
# path. `tests/embedded/test_numeric_domain.py` holds it equal to the Decimal reasoning below.
STORED_NUMBER_SQL_PATTERN: Final = r"^-?0*[0-9]{1,18}(\.[0-9]{1,9}0*)?$"
_IN_DOMAIN_TEXT: Final = re.compile(STORED_NUMBER_SQL_PATTERN.removeprefix("^").removesuffix("$"))


def number_error(value: object, places: int | None = PLACES) -> str | None:
    """None if `value` is a number of the domain; else the Lago error code that says why.

    `value` is an int, a Decimal (a JSON number read exactly) or a string in Lago's numeric
    form; anything else (a bool, a float, "1e5", "NaN") is `value_is_not_valid_number`.
    `places=None` bounds the range only (prices, see the module's docstring).
    """
    # Exact types, not isinstance: a bool is an int, and this runs once per checked value.
    kind = type(value)
    if kind is int:
        return None if -(10**MAX_INTEGER_DIGITS) < cast(int, value) < 10**MAX_INTEGER_DIGITS else OUT_OF_RANGE
    if kind is str:
        text = cast(str, value)
        if _IN_DOMAIN_TEXT.fullmatch(text) is not None:
            return None
        if _LAGO_NUMBER.fullmatch(text) is None:
            return NOT_A_NUMBER
        number = Decimal(text)
    elif kind is Decimal:
        number = cast(Decimal, value)
    else:
        return NOT_A_NUMBER
    if not number.is_finite():
        return NOT_A_NUMBER
    _, digits, exponent = number.as_tuple()
    if not any(digits):
        return None  # zero, whatever its exponent ("0E+400", "0.0000000000")
    exponent = cast(int, exponent)  # finite: an int, never 'n', 'N' or 'F'
    # Digits only, never arithmetic: a context would round a 40-digit value before the test.
    if exponent + len(digits) > MAX_INTEGER_DIGITS:
        return OUT_OF_RANGE
    if places is not None and exponent < -places and any(digits[places + exponent:]):
        return TOO_PRECISE
    return None


def decimal_text(value: Decimal) -> str:
    """The text Meterline stores for an exact decimal: its own digits, written out positionally
    ("100000" for 1E+5, "0.0000001" for 1E-7: the form the usage SQL reads) for every number of
    the domain, and left scientific beyond it (1E-999999999 written out would be a billion
    characters)."""
    text = str(value)
    if "E" not in text:  # the usual case: str() is positional already
        return text
    _, digits, exponent = value.as_tuple()
    if not any(digits):
        return "0"  # 0E+400, 0E-12
    # A number of the domain has no digit past the 9th place but zeros, and those zeros are
    # digits of the tuple: so its positional text is at most about as long as its digits.
    if exponent + len(digits) <= MAX_INTEGER_DIGITS and -exponent <= len(digits) + PLACES:  # type: ignore[operator]
        return format(value, "f")
    return text
