"""The money domain (a fee's and an invoice's minor units are a signed 64-bit integer) and
the billing run's isolation around it: a refused batch is retried one invoice at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from meterline.adapters.invoice_documents import invoice_document, invoice_from_document
from meterline.adapters.sql import UnsafeName, json_path, literal, to_duckdb
from meterline.core.money import AmountOutOfRange, check_minor_units
from meterline.core.numbers import INT64_MAX, INT64_MIN
from meterline.core.pricing.fee import ChargeResult, FeeRef, make_fee
from tests.harness.billing import DEC, HOUR, Billing, amounts
from tests.harness.november import EXPECTED

AT = datetime(2026, 11, 1, tzinfo=UTC)
REF = FeeRef("sub_1", AT.date(), AT.date(), "charge", "c")


def test_the_domain_is_a_signed_64_bit_integer():
    assert check_minor_units(INT64_MAX, "x") == INT64_MAX and check_minor_units(INT64_MIN, "x") == INT64_MIN
    for outside in (INT64_MAX + 1, INT64_MIN - 1):
        with pytest.raises(AmountOutOfRange) as raised:
            check_minor_units(outside, "fee x")
        assert raised.value.reason == "amount_out_of_range" and "fee x" in str(raised.value)


def test_a_fee_is_made_up_to_the_edge_and_refused_past_it():
    edge = make_fee(REF, "USD", ChargeResult(Decimal(1), Decimal(INT64_MAX) / 100), "x", AT, AT)
    assert edge.amount_cents == INT64_MAX
    with pytest.raises(AmountOutOfRange):
        make_fee(REF, "USD", ChargeResult(Decimal(1), Decimal("92233720368547758.075")), "x", AT, AT)  # rounds past it


def test_an_invoice_past_the_edge_cannot_be_made_and_precise_amounts_are_stored_exactly(tmp_path):
    billing = Billing(tmp_path)
    billing.run(DEC + 2 * HOUR)
    (invoice,) = billing.all()
    line = invoice.lines[0]
    huge = Decimal("123456789012345678901234567890.123456789012345678901")  # no 64-bit bound on precise amounts
    stored = invoice_from_document(invoice_document(replace(invoice, lines=(replace(line, precise_amount=huge),)), 1))
    assert stored.lines[0].precise_amount == huge and str(stored.lines[0].precise_amount) == str(huge)
    with pytest.raises(AmountOutOfRange):
        replace(invoice, lines=(replace(line, amount_cents=INT64_MAX), replace(line, amount_cents=1)))


def test_a_refused_batch_is_retried_one_invoice_at_a_time(tmp_path):
    billing = Billing(tmp_path)
    billing.admin.upsert_customer({"external_id": "globex", "currency": "USD"})
    billing.admin.create_subscription({"external_id": "sub_globex", "external_customer_id": "globex",
                                       "plan_code": billing.plan.code, "subscription_at": "2026-11-01T00:00:00Z"})
    store = billing.invoices
    real = store.issue_many
    calls = []

    def issue_many(invoices, at):
        calls.append(len(invoices))
        if any(i.subscription_external_id == "sub_globex" for i in invoices):
            raise TypeError("Integer exceeds 64-bit range")  # one document the store cannot write
        return real(invoices, at)

    store.issue_many = issue_many
    result = billing.run(DEC + 2 * HOUR)  # past the grace period: both created finalized, in one batch
    assert calls == [2, 1, 1]
    assert result.failed == {"sub_globex": "TypeError"} and result.finalized == 1
    (invoice,) = billing.all()
    assert invoice.subscription_external_id == "sub_acme" and amounts(invoice) == EXPECTED


def test_filter_values_are_quoted_as_literals_and_names_follow_the_one_rule():
    import duckdb

    for value in ["it's", 'say "hi"', "back\\slash", "$.value", "a.b", "line\nbreak", "\\'", "'; DROP TABLE x; --"]:
        assert duckdb.connect().execute(to_duckdb(f"SELECT {literal(value)} AS v")).fetchall() == [(value,)]
    assert json_path("tokens-in_2") == "'$.tokens-in_2'"
    for name in ("usage.tokens", "model name", "a[0]", "$x", "1st", "", "é"):
        with pytest.raises(UnsafeName):
            json_path(name)
