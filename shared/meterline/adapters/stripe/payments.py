"""Stripe as the payment provider (`ports.PaymentProvider`), through the official `stripe` package.

The calls are the ones real Stripe documents for invoicing without subscriptions:

  ensure_customer  search customers by metadata['meterline_customer_id']; if absent, create one
                   (idempotency key from our customer id)
  ensure_invoice   find our invoice at Stripe (its stored id, else search by
                   metadata['meterline_invoice_id']); if absent, create a draft with
                   auto_advance=false (Stripe never finalizes or charges it by itself),
                   pending_invoice_items_behavior=exclude (nothing else lands on it) and the
                   customer's collection method; then list its lines and add one invoice item
                   per line of ours that is not there yet (integer minor units, the line's
                   description with its tier breakdown, our ids in metadata)
  finalize         finalize_invoice(auto_advance=false): draft -> open, total fixed
  collect          pay (charge_automatically) or send_invoice (send_invoice); a customer
                   without a payment method is a result (payment_failed, no_payment_method),
                   and a later collect pays with the method `payment_method` found
  payment_method   the customer's default for invoices, else the newest attached one
  checkout_url     a Checkout session in setup mode: Stripe's page where the customer saves
                   a payment method (attached to their Stripe customer)
  list_invoices    list invoices by creation time (every page), keeping those with our
                   metadata['meterline_invoice_id'] (reconciliation's pull)

Every call that creates or moves something carries an idempotency key built from our ids, and
every step looks before it creates, because Stripe forgets idempotency keys after 24 hours:

  | crash                                   | the next run                                        |
  | after the customer is created           | finds it by search (the key covers the minute the   |
  |                                         | search index lags behind)                           |
  | after the invoice is created            | finds it by search, or by the id the store kept     |
  | between two items                       | lists the invoice's lines and adds only the missing |
  |                                         | ones: no duplicate, even days later                 |
  | after finalize / pay / send             | repeats the call: within 24 h Stripe replays the    |
  |                                         | first answer; later, "already finalized/paid" is    |
  |                                         | read back from the invoice itself                   |

Errors: a rate limit (429), a network error, a 409 conflict or a Stripe 5xx is retried in the
call with exponential backoff and full jitter, a bounded number of times; a declined card, and a
customer without a payment method, are results (`collect` returns status payment_failed with
the reason), not exceptions; anything else becomes
`PaymentProviderError` with Stripe's request id and no secret.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import stripe

from meterline import logs
from meterline.core.invoices import NO_PAYMENT_METHOD
from meterline.core.money import currency_exponent
from meterline.ports import ListedInvoice, PaymentProviderError, ProviderInvoice

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses  # the client's own TypedDict, not exported

    from meterline.config import Settings
    from meterline.core.invoices import Invoice, InvoiceLine

__all__ = ["MAX_ITEMS_PER_INVOICE", "StripePayments", "stripe_units"]

_log = logs.get("stripe")

# Stripe's limit: "there is a maximum of 250 items per invoice". A longer invoice is refused
# before anything is sent (PaymentProviderError code too_many_lines, not retryable): splitting
# it would print two invoices for one period, which is a product decision, not an adapter's.
MAX_ITEMS_PER_INVOICE = 250
CUSTOMER_KEY = "meterline_customer_id"
INVOICE_KEY = "meterline_invoice_id"
LINE_KEY = "meterline_line_ref"
NUMBER_KEY = "number"
_MAX_IDEMPOTENCY_KEY = 255  # Stripe's limits
_MAX_METADATA_VALUE = 500

# Currencies whose exponent in Stripe's API differs from ISO 4217 (docs.stripe.com/currencies,
# "special cases"): ISK is zero-decimal in ISO but two-decimal in Stripe's API (amounts in
# multiples of 100); MGA is two-decimal in ISO but zero-decimal at Stripe.
_STRIPE_EXPONENTS = {"ISK": 2, "MGA": 0}

_SECRET = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+")


def stripe_units(amount: int, currency: str, *, to_stripe: bool) -> int:
    """Our minor units (ISO 4217 exponent) <-> the integer amount Stripe's API uses.

    Refuses an amount that Stripe's unit cannot carry exactly (a fraction of an ariary)."""
    ours = currency_exponent(currency.upper())
    theirs = _STRIPE_EXPONENTS.get(currency.upper(), ours)
    shift = (theirs - ours) if to_stripe else (ours - theirs)
    if shift >= 0:
        return amount * 10**shift
    quotient, remainder = divmod(amount, 10**-shift)
    if remainder:
        raise PaymentProviderError(
            "amounts", f"{amount} minor units of {currency.upper()} cannot be expressed in Stripe's unit",
            code="amount_not_representable")
    return quotient


def _bounded(text: str, limit: int) -> str:
    """`text` if it fits `limit` characters, else a readable prefix and its SHA-256 (unique
    and stable, so the same line always gets the same key)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text[: limit - len(digest) - 1]}~{digest}"


def _idempotency_key(kind: str, *ids: str) -> str:
    return _bounded(":".join(("meterline", kind, *ids)), _MAX_IDEMPOTENCY_KEY)


def _search_query(key: str, value: str) -> str:
    """Stripe's search language: metadata['key']:'value', quotes and backslashes escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"metadata['{key}']:'{escaped}'"


def _retryable(exc: stripe.StripeError) -> bool:
    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return True
    status = exc.http_status
    # 409: a concurrent request holds the same idempotency key or object lock; 5xx: Stripe's own
    # failure. Repeating the request with the same idempotency key is safe in both cases.
    return status == 409 or (status is not None and status >= 500) or isinstance(exc, stripe.APIError)


def _provider_error(operation: str, exc: stripe.StripeError, retryable: bool) -> PaymentProviderError:
    message = _SECRET.sub("[redacted]", exc.user_message or type(exc).__name__)
    return PaymentProviderError(
        operation, message, http_status=exc.http_status, code=exc.code, request_id=exc.request_id, retryable=retryable)


class StripePayments:
    """`PaymentProvider` over a `stripe.StripeClient`.

    `max_attempts` bounds the tries of one call; the n-th retry waits a random time in
    [0, min(max_delay_s, base_delay_s * 2**(n-1))] ("full jitter", so that many billing
    workers throttled at once do not retry in step).
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        max_attempts: int = 5,
        base_delay_s: float = 0.5,
        max_delay_s: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ):
        self._client = client
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._sleep = sleep
        self._jitter = jitter

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> StripePayments:
        """The client for `settings.stripe_api_key`, pointed at `stripe_api_base` when set.
        Its own retries are off: this class retries, with our bounds and our logs."""
        if settings.stripe_api_key is None:
            raise ValueError("StripePayments needs METERLINE_STRIPE_API_KEY")
        base: BaseAddresses | None = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        client = stripe.StripeClient(settings.stripe_api_key.get_secret_value(), base_addresses=base, max_network_retries=0)
        return cls(client, **options)

    # -- the port ----------------------------------------------------------------------------

    def ensure_customer(self, customer_external_id: str, name: str | None, email: str | None) -> str:
        found = self._call(
            "customers.search", self._client.v1.customers.search,
            params={"query": _search_query(CUSTOMER_KEY, customer_external_id), "limit": 10})
        matches = sorted(found.data, key=lambda c: (c.created, c.id))
        if matches:
            if len(matches) > 1:  # made by hand, or before this adapter searched: use the oldest
                logs.event(_log, "several Stripe customers carry one Meterline customer id", logging.WARNING,
                           customer=customer_external_id, count=len(matches))
            return matches[0].id
        params: dict[str, Any] = {"metadata": {CUSTOMER_KEY: customer_external_id}}
        if name:
            params["name"] = name
        if email:
            params["email"] = email
        # NOTE: the idempotency key covers the minute in which Stripe's search index may not
        # show a customer just created by a run that crashed right after.
        customer = self._call(
            "customers.create", self._client.v1.customers.create, params=params,
            options={"idempotency_key": _idempotency_key("customer", customer_external_id)})
        return customer.id

    def ensure_invoice(self, invoice: Invoice, provider_customer_id: str, days_until_due: int | None) -> ProviderInvoice:
        self._check_lines(invoice)
        remote = self._find_invoice(invoice)
        if remote is None:
            remote = self._create_invoice(invoice, provider_customer_id, days_until_due)
        elif remote.customer != provider_customer_id:
            raise PaymentProviderError(
                "ensure_invoice", f"Stripe invoice {remote.id} of invoice {invoice.id} belongs to another customer",
                code="customer_mismatch")
        if remote.status == "draft":
            present = self._line_refs(remote.id)
            added = 0
            for line in invoice.lines:
                ref = _bounded(line.ref, _MAX_METADATA_VALUE)
                if ref in present:
                    continue  # added by an earlier, interrupted run
                self._call(
                    "invoice_items.create", self._client.v1.invoice_items.create,
                    params=self._item_params(invoice, line, remote.id, provider_customer_id),
                    options={"idempotency_key": _idempotency_key("item", invoice.id, line.ref)})
                added += 1
            if added:
                remote = self._retrieve(remote.id)
        return self._result(remote, invoice.currency)

    def finalize_invoice(self, invoice: Invoice) -> ProviderInvoice:
        remote_id = self._remote_id(invoice, "finalize")
        try:
            remote = self._call(
                "invoices.finalize_invoice", self._client.v1.invoices.finalize_invoice, remote_id,
                params={"auto_advance": False},
                options={"idempotency_key": _idempotency_key("finalize", invoice.id)},
                passthrough=(stripe.InvalidRequestError,))
        except stripe.InvalidRequestError as exc:
            remote = self._already_done(remote_id, exc, "invoices.finalize_invoice", done=("open", "paid", "uncollectible", "void"))
        return self._result(remote, invoice.currency)

    def collect(self, invoice: Invoice, payment_method: str | None = None) -> ProviderInvoice:
        remote_id = self._remote_id(invoice, "collect")
        method: Callable[..., Any]
        done: tuple[str, ...]
        if invoice.collection_method == "send_invoice":
            operation, method, done = "invoices.send_invoice", self._client.v1.invoices.send_invoice, ("paid", "void")
            key = _idempotency_key("send_invoice", invoice.id)
        else:
            operation, method, done = "invoices.pay", self._client.v1.invoices.pay, ("paid",)
            # A charge with a given method has a key of its own: the first pay's answer (no
            # payment method) is saved under the plain key for 24 h, and would be replayed.
            key = _idempotency_key("pay", invoice.id, *([payment_method] if payment_method else []))
        params = {"payment_method": payment_method} if payment_method else None
        try:
            remote = self._call(operation, method, remote_id, params=params, options={"idempotency_key": key},
                                passthrough=(stripe.CardError, stripe.InvalidRequestError))
        except stripe.CardError as exc:
            # A decline is the customer's outcome, not our failure: the run goes on, the invoice
            # becomes payment_failed, and Stripe keeps it open for a later payment.
            logs.event(_log, "card declined", logging.INFO, invoice_id=invoice.id, provider_invoice_id=remote_id,
                       code=exc.code, request_id=exc.request_id)
            return self._failed(self._retrieve(remote_id), invoice, exc.code or "card_declined")
        except stripe.InvalidRequestError as exc:
            remote = self._retrieve(remote_id)
            if remote.status in done:
                return self._result(remote, invoice.currency)  # done already (see _already_done)
            if operation == "invoices.pay" and payment_method is None and invoice.provider_customer_id:
                # Stripe refuses to charge a customer with no default payment method. One saved
                # on Stripe's Checkout page is attached but not made the default: charge that
                # one; with none at all, the charge failed for want of a payment method.
                found = self.payment_method(invoice.provider_customer_id)
                if found is not None:
                    return self.collect(invoice, found)
                if remote.status == "open":
                    return self._failed(remote, invoice, NO_PAYMENT_METHOD)
            raise _provider_error(operation, exc, retryable=False) from None
        return self._result(remote, invoice.currency)

    def payment_method(self, provider_customer_id: str) -> str | None:
        """The payment method a charge of this customer uses: the default for invoices (or the
        legacy default source), else the newest one attached; None when there is none."""
        customer = self._call("customers.retrieve", self._client.v1.customers.retrieve, provider_customer_id)
        settings = getattr(customer, "invoice_settings", None)
        default = getattr(settings, "default_payment_method", None) if settings is not None else None
        if default:
            return default if isinstance(default, str) else default.id
        source = getattr(customer, "default_source", None)
        if source:
            return source if isinstance(source, str) else source.id
        attached = self._call("customers.payment_methods.list", self._client.v1.customers.payment_methods.list,
                              provider_customer_id, params={"limit": 1})  # newest first
        return attached.data[0].id if attached.data else None

    def checkout_url(self, provider_customer_id: str, success_url: str, payment_method_types: list[str]) -> str:
        """A new Checkout session in setup mode for the customer: the URL of Stripe's page where
        they save a payment method. Each call makes a new session (Stripe expires them after
        24 h), as Lago's regenerate does; nothing is charged."""
        session = self._call(
            "checkout.sessions.create", self._client.v1.checkout.sessions.create,
            params={"mode": "setup", "customer": provider_customer_id, "success_url": success_url,
                    "allowed_payment_method_types": payment_method_types})
        return session.url

    def list_invoices(self, created_from: datetime, created_to: datetime) -> list[ListedInvoice]:
        """Stripe's invoices created in [created_from, created_to) that carry our invoice id
        (`metadata['meterline_invoice_id']`), every page of `GET /v1/invoices` (newest first).
        Reconciliation records them, so that an invoice whose webhook never arrived still has
        Stripe's figures. Others' invoices in the same account are left out."""
        # Stripe's `created` is in whole seconds: an invoice made at 12.3 s says 12, which lies in
        # [from, to) exactly when 12 >= ceil(from) and 12 < ceil(to).
        params: dict[str, Any] = {"limit": 100, "created": {"gte": math.ceil(created_from.timestamp()),
                                                            "lt": math.ceil(created_to.timestamp())}}
        found: list[ListedInvoice] = []
        while True:
            page = self._call("invoices.list", self._client.v1.invoices.list, params=params)
            for remote in page.data:
                ours = (remote.to_dict().get("metadata") or {}).get(INVOICE_KEY)
                if not ours:
                    continue
                currency = remote.currency.upper()
                due = getattr(remote, "due_date", None)
                found.append(ListedInvoice(
                    provider_invoice_id=remote.id, invoice_id=ours, status=remote.status, currency=currency,
                    total_cents=stripe_units(remote.total, currency, to_stripe=False),
                    amount_paid_cents=stripe_units(getattr(remote, "amount_paid", 0) or 0, currency, to_stripe=False),
                    due_at=datetime.fromtimestamp(due, tz=UTC) if due else None))
            if not page.has_more or not page.data:
                return found
            params = {**params, "starting_after": page.data[-1].id}

    # -- steps -------------------------------------------------------------------------------

    def _check_lines(self, invoice: Invoice) -> None:
        if len(invoice.lines) > MAX_ITEMS_PER_INVOICE:
            raise PaymentProviderError(
                "ensure_invoice",
                f"invoice {invoice.id} has {len(invoice.lines)} lines; Stripe allows {MAX_ITEMS_PER_INVOICE} items per invoice",
                code="too_many_lines")
        refs = [_bounded(line.ref, _MAX_METADATA_VALUE) for line in invoice.lines]
        if len(set(refs)) != len(refs):  # the ref is how a resumed run recognises a line
            raise PaymentProviderError("ensure_invoice", f"invoice {invoice.id} has two lines with one ref",
                                       code="duplicate_line_ref")

    def _find_invoice(self, invoice: Invoice):
        if invoice.provider_invoice_id:
            return self._retrieve(invoice.provider_invoice_id)
        found = self._call(
            "invoices.search", self._client.v1.invoices.search,
            params={"query": _search_query(INVOICE_KEY, invoice.id), "limit": 10})
        matches = sorted(found.data, key=lambda i: (i.created, i.id))
        if len(matches) > 1:
            logs.event(_log, "several Stripe invoices carry one Meterline invoice id", logging.WARNING,
                       invoice_id=invoice.id, count=len(matches))
        return matches[0] if matches else None

    def _create_invoice(self, invoice: Invoice, provider_customer_id: str, days_until_due: int | None):
        metadata = {INVOICE_KEY: invoice.id}
        if invoice.number:
            metadata[NUMBER_KEY] = invoice.number
        params: dict[str, Any] = {
            "customer": provider_customer_id,
            "currency": invoice.currency.lower(),
            "auto_advance": False,  # we finalize and collect explicitly, step by step
            "collection_method": invoice.collection_method,
            "pending_invoice_items_behavior": "exclude",
            "description": f"{invoice.number or invoice.id}: {invoice.period_start} to {invoice.period_end}",
            "metadata": metadata,
        }
        if invoice.collection_method == "send_invoice":
            days = days_until_due if days_until_due is not None else invoice.days_until_due
            if days is None:
                raise PaymentProviderError("ensure_invoice", f"send_invoice invoice {invoice.id} has no days_until_due",
                                           code="missing_days_until_due")
            params["days_until_due"] = days
        return self._call("invoices.create", self._client.v1.invoices.create, params=params,
                          options={"idempotency_key": _idempotency_key("invoice", invoice.id)})

    def _line_refs(self, remote_id: str) -> set[str]:
        """The refs of the lines already on the Stripe invoice (every page)."""
        page = self._call("invoices.line_items.list", self._client.v1.invoices.line_items.list, remote_id,
                          params={"limit": 100})
        refs = set()
        while True:
            for line in page.data:
                ref = (line.to_dict().get("metadata") or {}).get(LINE_KEY)
                if ref:
                    refs.add(ref)
            if not page.has_more or not page.data:
                return refs
            page = self._call("invoices.line_items.list", self._client.v1.invoices.line_items.list, remote_id,
                              params={"limit": 100, "starting_after": page.data[-1].id})

    def _item_params(self, invoice: Invoice, line: InvoiceLine, remote_id: str, customer: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "customer": customer,
            "invoice": remote_id,
            "amount": stripe_units(line.amount_cents, invoice.currency, to_stripe=True),
            "currency": invoice.currency.lower(),
            "description": line.description,  # carries the tier breakdown the customer reads
            "metadata": {INVOICE_KEY: invoice.id, LINE_KEY: _bounded(line.ref, _MAX_METADATA_VALUE)},
        }
        if line.from_datetime is not None and line.to_datetime is not None:
            params["period"] = {"start": int(line.from_datetime.timestamp()), "end": int(line.to_datetime.timestamp())}
        return params

    def _failed(self, remote, invoice: Invoice, code: str) -> ProviderInvoice:
        """A charge that did not happen, as Stripe's invoice (read after it) stands: paid
        meanwhile (another run, the hosted page) is paid; else payment_failed with `code`."""
        result = self._result(remote, invoice.currency)
        if result.status == "paid":
            return result
        return dataclasses.replace(result, status="payment_failed", failure_code=code)

    def _already_done(self, remote_id: str, exc: stripe.InvalidRequestError, operation: str, done: tuple[str, ...]):
        """A refused finalize/pay/send whose work is already done (a crashed run did it more
        than 24 h ago, or the customer paid on the hosted page) is a success; else an error."""
        remote = self._retrieve(remote_id)
        if remote.status in done:
            return remote
        raise _provider_error(operation, exc, retryable=False) from None

    def _remote_id(self, invoice: Invoice, operation: str) -> str:
        if not invoice.provider_invoice_id:
            raise PaymentProviderError(operation, f"invoice {invoice.id} has no Stripe invoice yet (run ensure_invoice)",
                                       code="no_provider_invoice")
        return invoice.provider_invoice_id

    def _retrieve(self, remote_id: str):
        return self._call("invoices.retrieve", self._client.v1.invoices.retrieve, remote_id)

    @staticmethod
    def _result(remote, currency: str) -> ProviderInvoice:
        return ProviderInvoice(
            id=remote.id,
            status=remote.status,
            total_cents=stripe_units(remote.total, currency, to_stripe=False),
            hosted_invoice_url=getattr(remote, "hosted_invoice_url", None),
        )

    # -- one call, with retries --------------------------------------------------------------

    def _call(self, operation: str, method: Callable[..., Any], *args: Any, params: dict[str, Any] | None = None,
              options: dict[str, Any] | None = None, passthrough: tuple[type[Exception], ...] = ()) -> Any:
        """`method(*args, params=..., options=...)`, retried while Stripe says "later"."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return method(*args, params=params, options=options)
            except passthrough:
                raise
            except stripe.StripeError as exc:
                retryable = _retryable(exc)
                if not retryable or attempt == self._max_attempts:
                    raise _provider_error(operation, exc, retryable) from None
                delay = self._jitter() * min(self._max_delay_s, self._base_delay_s * 2 ** (attempt - 1))
                logs.event(_log, "Stripe call retried", logging.WARNING, operation=operation, attempt=attempt,
                           http_status=exc.http_status, request_id=exc.request_id, delay_s=round(delay, 3))
                self._sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises
