"""An invoice as one JSON document and back: the codec of both invoice stores
(`SqliteInvoiceStore`, `FirestoreInvoiceStore`).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from meterline.core.invoices import Invoice, InvoiceLine

# The whole invoice is one JSON text: Decimals (units and precise amounts, which have no
# 64-bit bound) as their exact text, datetimes as ISO-8601 with all six microsecond digits and
# their offset, dates as ISO dates. Reading goes by the dataclasses' own type hints, so a
# field the core adds later round-trips with no change here (and a document written before it
# existed reads back with the field's default).


def _exact(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact, exponent included: Decimal(str(d)) == d, digit for digit
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in an invoice document")


@functools.cache
def _readers(cls: type) -> dict[str, Callable[[Any], Any]]:
    """Field name -> how to read its stored text back, for the fields that are not plain JSON."""
    readers: dict[str, Callable[[Any], Any]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        kinds = set(typing.get_args(hint)) - {type(None)} or {hint}  # `X | None` -> {X}
        # datetime before date: a datetime is a date too.
        for kind, read in ((Decimal, Decimal), (datetime, datetime.fromisoformat), (date, date.fromisoformat)):
            if kind in kinds:
                readers[name] = read
                break
    return readers


def _read(cls: type, data: dict[str, Any]) -> Any:
    readers = _readers(cls)
    return cls(**{k: v if v is None or k not in readers else readers[k](v) for k, v in data.items()})


def invoice_document(invoice: Invoice, version: int) -> str:
    """The invoice as stored, carrying the stored `version` (the document and the store's
    version column never disagree)."""
    try:
        return orjson.dumps(
            replace(invoice, version=version), default=_exact, option=orjson.OPT_PASSTHROUGH_DATETIME
        ).decode()
    except orjson.JSONEncodeError as exc:
        # A ValueError, which `issue_many` refuses for this invoice alone: one document that
        # cannot be written never rolls back the others of its transaction. (The core keeps
        # every int in 64 bits, core.money; this is the store's own guard.)
        raise ValueError(f"invoice {invoice.id} cannot be stored: {exc}") from None


def invoice_record(invoice: Invoice, version: int) -> dict[str, Any]:
    """What both invoice stores keep per invoice: the document, and beside it the fields they
    filter and sort on (rewritten from the invoice on every write; `issuing_date` as ISO
    text, whose text order is date order)."""
    return {
        "id": invoice.id,
        "customer_external_id": invoice.customer_external_id,
        "subscription_external_id": invoice.subscription_external_id,
        "status": invoice.status,
        "issuing_date": invoice.issuing_date.isoformat(),
        "provider_invoice_id": invoice.provider_invoice_id,
        "version": version,
        "doc": invoice_document(invoice, version),
    }


def invoice_from_document(doc: str | bytes) -> Invoice:
    data = orjson.loads(doc)
    data["lines"] = tuple(_read(InvoiceLine, line) for line in data.get("lines", ()))
    return _read(Invoice, data)
