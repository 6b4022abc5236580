"""The payment provider's steps of an invoice: one way, one at a time, stored as their text."""

from __future__ import annotations

from datetime import UTC, date, datetime

import orjson
import pytest

from meterline.adapters.invoice_documents import invoice_document, invoice_from_document
from meterline.core.invoices import Invoice, ProviderStep, can_step

AT = datetime(2026, 12, 1, 1, tzinfo=UTC)


def invoice(**changes) -> Invoice:
    return Invoice(
        id="inv-1", customer_external_id="acme", subscription_external_id="sub_acme", currency="USD",
        period_start=date(2026, 11, 1), period_end=date(2026, 11, 30), from_utc=AT, to_utc=AT,
        issuing_date=date(2026, 12, 1), grace_until=AT, status="finalized", **changes,
    )


def test_the_steps_go_forward_one_at_a_time():
    current = invoice()
    for step in (ProviderStep.INVOICE, ProviderStep.FINALIZED, ProviderStep.COLLECTED):
        current = current.stepped(step, AT)
        assert current.provider_step is step
    assert not any(can_step(ProviderStep.COLLECTED, step) for step in ProviderStep)


@pytest.mark.parametrize(("current", "new"), [
    (None, ProviderStep.FINALIZED),  # skipped
    (ProviderStep.INVOICE, ProviderStep.INVOICE),  # repeated
    (ProviderStep.FINALIZED, ProviderStep.INVOICE),  # backwards
])
def test_a_step_out_of_order_is_refused(current, new):
    with pytest.raises(ValueError, match="provider step"):
        invoice(provider_step=current).stepped(new, AT)


def test_a_step_is_stored_as_its_text_and_read_back_as_the_step():
    doc = invoice_document(invoice(provider_step=ProviderStep.FINALIZED), 3)
    assert orjson.loads(doc)["provider_step"] == "finalized"
    read = invoice_from_document(doc)
    assert read.provider_step is ProviderStep.FINALIZED and read.provider_step == "finalized"


def test_text_that_is_no_step_is_refused():
    assert invoice(provider_step="collected").provider_step is ProviderStep.COLLECTED
    with pytest.raises(ValueError):
        invoice(provider_step="sent")
