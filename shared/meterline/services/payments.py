"""Payment events from the provider's webhook: our invoice follows, never backwards.

    PaymentEvents(invoices, processed, finance).handle(event)   # entrypoints/stripe_webhook.py

The provider delivers each event at least once, in any order. So:

  * an event id already handled is answered at once (`ProcessedEvents.seen`);
  * the invoice is found by our id in the provider object's metadata, else by the provider's
    invoice id (`InvoiceStore.find_by_provider_id`);
  * its state moves only forward (`core.invoices.can_move`): payment_succeeded arriving
    before finalized leaves it paid, and payment_failed after paid leaves it paid. An event
    that cannot move it still fills in the provider's fields it lacks (hosted_invoice_url);
  * a state change of a draft is NOT taken from the provider: finalization, with its
    invoice number, belongs to the billing run. Such an event (only possible while a run is
    between its own finalize and Stripe's) raises `NotYet`, and the webhook answers 503 so
    that Stripe delivers it again later (it retries for three days);
  * finance sees it: the invoice as stored goes to `invoices`/`invoice_lines`, a payment
    event (paid, payment_failed) becomes a row of `payments` (`FinanceLedger.record_invoice`,
    `record_payment`), and the provider invoice's total and amount paid as the event shows
    them a row of `provider_invoices` (reconciliation, `services.reconcile`).

The steps of one event, and what a crash after each costs:

  | step                                 | a crash after it                                        |
  | 1 seen(event.id)?                    | nothing written: the redelivery does everything         |
  | 2 store the invoice's move           | redelivery: the move is already there (same state is    |
  |   (versioned write; StaleWrite: read |   not a move), so nothing changes; steps 3-4 run        |
  |   again and decide again)            |                                                         |
  | 3 write the finance rows             | redelivery writes them again: the invoice row with the  |
  |                                      |   same version, the payment and provider_invoices rows  |
  |                                      |   with the same event id and time                       |
  |                                      |   (duplicates the views drop, never a loss)             |
  | 4 record event.id (first_time)       | done                                                    |

Recording the id only after the state change is stored (not before) is what makes a crash
cost a repeated, idempotent move instead of a lost payment.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from meterline import logs
from meterline.core.clock import now_us, to_us
from meterline.core.invoices import Invoice, can_move, payment_status
from meterline.ports import (
    FinanceLedger,
    InvoiceStore,
    Payment,
    PaymentEvent,
    ProcessedEvents,
    ProviderObservation,
    StaleWrite,
)

__all__ = ["HandleResult", "NotYet", "Outcome", "PaymentEvents"]

_log = logs.get("payments")

# Versioned writes that lost to a concurrent writer are decided again on a fresh read; a
# billing run and a webhook touch one invoice rarely, so a few rounds always suffice.
MAX_WRITE_ROUNDS = 5


class NotYet(Exception):
    """The event is ahead of our invoice (still a draft): deliver it again later."""


class Outcome(enum.StrEnum):
    APPLIED = "applied"  # the invoice moved (or gained the provider's fields)
    UNCHANGED = "unchanged"  # already there or further: a late or repeated event
    DUPLICATE = "duplicate"  # this event id was handled before
    IGNORED = "ignored"  # a type we do not act on
    UNKNOWN_INVOICE = "unknown_invoice"  # not one of our invoices


@dataclass(frozen=True)
class HandleResult:
    outcome: Outcome
    invoice_id: str | None = None
    status: str | None = None  # our invoice's status after the event


class PaymentEvents:
    def __init__(
        self,
        invoices: InvoiceStore,
        processed: ProcessedEvents,
        finance: FinanceLedger | None = None,
        clock_us: Callable[[], int] = now_us,
    ):
        self._invoices = invoices
        self._processed = processed
        self._finance = finance
        self._clock_us = clock_us

    def handle(self, event: PaymentEvent) -> HandleResult:
        if event.moves_to is None:
            logs.event(_log, "webhook event ignored", logging.INFO, event_id=event.id, event_type=event.type)
            return HandleResult(Outcome.IGNORED)
        if self._processed.seen(event.id):
            return HandleResult(Outcome.DUPLICATE, event.invoice_id)
        invoice = self._find(event)
        if invoice is None:
            # Another system's invoice in the same Stripe account, or one of another
            # environment's: nothing of ours to change. Recorded, so a redelivery costs nothing.
            logs.event(_log, "webhook event for an invoice that is not ours", logging.WARNING, event_id=event.id,
                       event_type=event.type, provider_invoice_id=event.provider_invoice_id, invoice_id=event.invoice_id)
            self._processed.first_time(event.id)
            return HandleResult(Outcome.UNKNOWN_INVOICE, event.invoice_id)

        invoice, outcome = self._apply(invoice, event)  # step 2
        if self._finance is not None:  # step 3, for every event seen the first time: see the table
            at_us = self._clock_us()
            self._finance.record_invoice(invoice, at_us)
            if event.moves_to in ("paid", "payment_failed"):
                self._finance.record_payment(self._payment(invoice, event))
            observed = self._observation(invoice, event)
            if observed is not None:  # Stripe's own total and amount paid, for reconciliation
                self._finance.record_provider_invoices([observed])
        self._processed.first_time(event.id)  # step 4: only now, after the change is stored
        logs.event(_log, "webhook event handled", logging.INFO, event_id=event.id, event_type=event.type,
                   invoice_id=invoice.id, outcome=outcome.value, status=invoice.status)
        return HandleResult(outcome, invoice.id, invoice.status)

    # -- steps ------------------------------------------------------------------------------

    def _find(self, event: PaymentEvent) -> Invoice | None:
        if event.invoice_id:
            invoice = self._invoices.get(event.invoice_id)
            if invoice is not None:
                return invoice
        if event.provider_invoice_id:
            return self._invoices.find_by_provider_id(event.provider_invoice_id)
        return None

    def _apply(self, invoice: Invoice, event: PaymentEvent) -> tuple[Invoice, Outcome]:
        """Move `invoice` as far as `event` says, if that is forward; store it (versioned)."""
        target = event.moves_to
        assert target is not None
        for _ in range(MAX_WRITE_ROUNDS):
            changed = self._provider_fields(invoice, event)
            if invoice.status == "draft" and target != "voided":
                # NOTE: the billing run finalizes (and numbers) the invoice before Stripe can;
                # a provider event about a draft means that run has not stored its step yet.
                raise NotYet(f"invoice {invoice.id} is still a draft; {event.type} must wait for the billing run")
            now = datetime.fromtimestamp(self._clock_us() / 1_000_000, tz=UTC)
            if can_move(invoice.status, target):  # type: ignore[arg-type]
                if target == "paid":
                    changed["paid_at"] = event.occurred_at  # when the provider says it was paid
                updated = invoice.moved(target, now, **changed)  # type: ignore[arg-type]
            elif changed:
                updated = replace(invoice, updated_at=now, **changed)
            else:
                return invoice, Outcome.UNCHANGED
            try:
                return self._invoices.update(updated), Outcome.APPLIED
            except StaleWrite:
                fresh = self._invoices.get(invoice.id)
                if fresh is None:  # deleted meanwhile: nothing left to move
                    return invoice, Outcome.UNCHANGED
                invoice = fresh
        raise StaleWrite(f"invoice {invoice.id} kept changing while webhook event {event.id} was applied")

    @staticmethod
    def _provider_fields(invoice: Invoice, event: PaymentEvent) -> dict:
        """The provider's fields the event carries and our invoice lacks (never overwritten:
        ours were stored by the billing run from the same provider)."""
        changed = {}
        if event.provider_invoice_id and not invoice.provider_invoice_id:
            changed["provider_invoice_id"] = event.provider_invoice_id
        if event.hosted_invoice_url and not invoice.hosted_invoice_url:
            changed["hosted_invoice_url"] = event.hosted_invoice_url
        return changed

    @staticmethod
    def _observation(invoice: Invoice, event: PaymentEvent) -> ProviderObservation | None:
        """The provider invoice as this event shows it (None: the event lacks its figures).
        Its time is the event's, so a redelivery records the same row again."""
        provider_id = event.provider_invoice_id or invoice.provider_invoice_id
        if provider_id is None or event.total_cents is None or event.provider_status is None:
            return None
        return ProviderObservation(
            invoice_id=invoice.id, customer_external_id=invoice.customer_external_id,
            issuing_date=invoice.issuing_date, provider_invoice_id=provider_id, status=event.provider_status,
            currency=event.currency or invoice.currency, total_cents=event.total_cents,
            amount_paid_cents=event.amount_paid_cents or 0, due_at=event.due_at, source="webhook",
            observed_at_us=to_us(event.occurred_at), provider_event_id=event.id)

    @staticmethod
    def _payment(invoice: Invoice, event: PaymentEvent) -> Payment:
        return Payment(
            invoice_id=invoice.id,
            customer_external_id=invoice.customer_external_id,
            provider_event_id=event.id,
            status=payment_status(event.moves_to),  # type: ignore[arg-type]  # succeeded | failed
            amount_cents=event.amount_cents if event.amount_cents is not None else invoice.amount_cents,
            currency=invoice.currency,
            at_us=to_us(event.occurred_at),
        )
