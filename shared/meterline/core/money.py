"""Money as `Decimal`: parsing, currency exponents and the one rounding rule.

Why this module exists: billing errors are almost always rounding errors. Every amount in
Meterline is a `Decimal` parsed from a string or an int (never a float, whose binary fractions
turn 0.1 into 0.1000000000000000055...), and it is rounded exactly once, where a fee is made,
with ROUND_HALF_UP to the currency's ISO 4217 exponent (Lago does the same with BigDecimal).
Stripe receives integer minor units, which `to_minor_units` produces only from an amount that
is already rounded, so a missed rounding step fails loudly instead of truncating silently.

The domain of a rounded amount in minor units (a fee's or an invoice's `amount_cents`) is
a signed 64-bit integer, what Lago stores and what both invoice stores write (orjson writes
64 bits at most): `check_minor_units` enforces it where the amount is made, and refuses with
`AmountOutOfRange`. Unrounded (precise) amounts are Decimals, stored as their exact text, so
they have no such bound.

Arithmetic runs in `MONEY_CONTEXT` (50 significant digits, traps on invalid operations) inside
`with money_context():`, which restores the caller's decimal context on exit, so this module
never changes the decimal context that other code (and other threads) rely on.
"""

from __future__ import annotations

import re
import threading
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    getcontext,
    setcontext,
)
from typing import Final

from meterline.core.errors import Unbillable
from meterline.core.numbers import INT64_MAX, INT64_MIN

__all__ = [
    "CURRENCY_EXPONENTS",
    "AmountOutOfRange",
    "MONEY_CONTEXT",
    "ZERO",
    "check_minor_units",
    "currency_exponent",
    "from_minor_units",
    "money_context",
    "parse_decimal",
    "round_money",
    "to_minor_units",
]

# NOTE: 50 digits is far beyond any real bill (10^15 currency units at 10^-12 per-unit
# prices still fits in 28 digits); the margin keeps proration ratios like 15/31 precise.
MONEY_CONTEXT: Final = Context(
    prec=50,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

ZERO: Final = Decimal(0)

# ISO 4217 minor-unit exponents for active currencies. Most are 2; only the exceptions need
# care, but listing the 2s too means an unknown or misspelt code is rejected rather than
# silently billed in cents.
_EXPONENT_0 = ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF").split()
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND".split()
_EXPONENT_4 = "CLF UYW".split()
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD "
    "KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD "
    "NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED "
    "VES WST XCD XCG YER ZAR ZMW ZWG"
).split()

CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    **{code: 2 for code in _EXPONENT_2},
    **{code: 0 for code in _EXPONENT_0},
    **{code: 3 for code in _EXPONENT_3},
    **{code: 4 for code in _EXPONENT_4},
}

_DECIMAL_TEXT: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

# quantize() targets, built once: Decimal("1"), Decimal("0.01"), ...
_QUANTA: Final[dict[int, Decimal]] = {e: Decimal(1).scaleb(-e) for e in range(5)}
_QUANTUM_BY_CURRENCY: Final[dict[str, Decimal]] = {code: _QUANTA[e] for code, e in CURRENCY_EXPONENTS.items()}


class _MoneyContext:
    """`with money_context():` runs Decimal arithmetic in a copy of MONEY_CONTEXT and then
    restores the caller's context, like `decimal.localcontext(MONEY_CONTEXT)`.

    NOTE: localcontext copies the context on every entry, which cost more than pricing a
    simple charge. This reuses one copy per thread (decimal contexts are per thread, and
    only its status flags change as it is used), so entering is a save and a set.
    """

    __slots__ = ("_saved",)

    def __enter__(self) -> Context:
        self._saved = getcontext()
        context = getattr(_per_thread, "context", None)
        if context is None:
            context = _per_thread.context = MONEY_CONTEXT.copy()
        setcontext(context)
        return context

    def __exit__(self, *exc_info: object) -> None:
        setcontext(self._saved)


_per_thread = threading.local()


def money_context() -> _MoneyContext:
    """A `with` block running Decimal arithmetic in MONEY_CONTEXT (the global one is untouched)."""
    return _MoneyContext()


class AmountOutOfRange(Unbillable):
    """An amount in minor units outside the money domain (a signed 64-bit integer)."""

    def __init__(self, message: str):
        super().__init__("amount_out_of_range", message)


def check_minor_units(minor: int, what: str) -> int:
    """`minor` if it is in the money domain (a signed 64-bit integer), else AmountOutOfRange
    naming `what` ("fee sub_1|...", "invoice ...")."""
    if INT64_MIN <= minor <= INT64_MAX:
        return minor
    raise AmountOutOfRange(f"{what}: {minor} minor units is outside the money domain (a signed 64-bit integer)")


def currency_exponent(currency: str) -> int:
    """ISO 4217 exponent of `currency` (USD 2, JPY 0, KWD 3); unknown codes raise ValueError."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except (KeyError, TypeError):
        raise ValueError(f"unknown currency {currency!r}: expected an ISO 4217 code such as 'USD'") from None


def round_money(precise: Decimal, currency: str) -> Decimal:
    """Round a precise amount (major units) once, ROUND_HALF_UP, to the currency's exponent."""
    if not isinstance(precise, Decimal):
        raise TypeError(f"round_money needs a Decimal, got {type(precise).__name__}")
    quantum = _QUANTUM_BY_CURRENCY.get(currency)  # called per fee: one dict lookup
    if quantum is None:
        currency_exponent(currency)  # raises the clear error
        raise AssertionError("every known currency has a quantum")
    # NOTE: positional arguments: decimal parses keyword arguments several times slower,
    # and this runs once per fee.
    return precise.quantize(quantum, ROUND_HALF_UP, MONEY_CONTEXT)


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Exact integer minor units (cents) of an already rounded amount, e.g. 12.34 USD -> 1234.

    Raises ValueError if `amount` has more decimals than the currency allows: converting must
    never be a hidden second rounding.
    """
    if not isinstance(amount, Decimal):
        raise TypeError(f"to_minor_units needs a Decimal, got {type(amount).__name__}")
    exponent = currency_exponent(currency)
    minor = amount.scaleb(exponent, MONEY_CONTEXT)
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} {currency} is not rounded to {exponent} decimals; call round_money first")
    return int(minor)


def from_minor_units(minor: int, currency: str) -> Decimal:
    """Major-unit Decimal of integer minor units, e.g. 1234 USD cents -> Decimal('12.34')."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units must be an int, got {type(minor).__name__}")
    return Decimal(minor).scaleb(-currency_exponent(currency), MONEY_CONTEXT)


def parse_decimal(value: str | int | Decimal) -> Decimal:
    """Parse a decimal string or int exactly. Floats, bools, NaN and infinities are refused.

    Floats are refused because the damage is already done by the time one arrives: 0.1 as a
    float is not one tenth.
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"amounts must be decimal strings or ints, not {type(value).__name__} ({value!r})")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        # NOTE: stricter than Decimal(): no underscores, spaces, "Infinity" or "NaN", which
        # Decimal() would accept but which no API client means as an amount.
        if not _DECIMAL_TEXT.fullmatch(value):
            raise ValueError(f"not a decimal number: {value!r}")
        result = Decimal(value)
    else:
        raise TypeError(f"amounts must be decimal strings or ints, not {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"not a finite decimal number: {value!r}")
    return result
