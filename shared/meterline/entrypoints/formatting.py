"""Money and units as a customer reads them on the portal's page: presentation only (the
amounts themselves are integer minor units and Decimals, computed elsewhere)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from meterline.core.money import MONEY_CONTEXT, currency_exponent

__all__ = ["format_amount", "format_money", "format_units"]

# The symbols customers expect; any other currency is shown by its ISO code.
_SYMBOLS = {
    "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "CN¥", "INR": "₹", "KRW": "₩", "BRL": "R$",
    "CAD": "CA$", "AUD": "A$", "NZD": "NZ$", "HKD": "HK$", "MXN": "MX$", "ILS": "₪", "VND": "₫",
    "TWD": "NT$", "PHP": "₱", "NGN": "₦", "UAH": "₴", "TRY": "₺", "THB": "฿", "PLN": "zł",
}


def format_amount(minor_units: int, currency: str) -> str:
    """Integer minor units in major units at the currency's exponent, grouped by thousands:
    `1,234.50` (USD), `-1,235` (JPY), `1.250` (KWD)."""
    exponent = currency_exponent(currency)
    amount = Decimal(abs(minor_units)).scaleb(-exponent, MONEY_CONTEXT)
    text = f"{amount:,.{exponent}f}"
    return f"-{text}" if minor_units < 0 else text


def format_money(minor_units: int, currency: str) -> str:
    """Integer minor units as the customer reads them: `$1,234.50`, `¥1,235`, `KWD 1.250`."""
    text = format_amount(abs(minor_units), currency)
    symbol = _SYMBOLS.get(currency)
    text = f"{symbol}{text}" if symbol else f"{currency} {text}"
    return f"-{text}" if minor_units < 0 else text


_UNITS_SHOWN = Decimal("0.0001")


def format_units(units: Decimal) -> str:
    """Units as read: grouped by thousands, without the warehouse's padding, at most four
    decimals (prorated seats are 1.9354838709677...): 12,000,000, 1.5 or 1.9355."""
    if units.as_tuple().exponent < -4:  # type: ignore[operator] # finite: units are never NaN
        units = units.quantize(_UNITS_SHOWN, ROUND_HALF_UP, MONEY_CONTEXT)
    sign, units = ("-" if units < 0 else ""), abs(units).normalize()
    whole, _, fraction = format(units, "f").partition(".")
    return f"{sign}{int(whole):,}" + (f".{fraction}" if fraction else "")
