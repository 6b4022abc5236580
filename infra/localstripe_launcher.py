"""Run localstripe on loopback only, without its pickle file, extended where Meterline's
production Stripe flow needs what localstripe lacks.

Started by ``infra/servers.py`` with the interpreter of ``.venv-localstripe``:

    .venv-localstripe/bin/python infra/localstripe_launcher.py --port P

Stock ``localstripe`` binds to every interface and pickles its whole store to the fixed file
``/tmp/localstripe.pickle`` on every write (and reloads it at start), so two instances would
share state. Here the store lives in memory only and the server listens on 127.0.0.1.

The extensions below make localstripe answer the calls ``meterline.adapters.stripe`` sends
to real Stripe; the production flow is never bent to fit localstripe. Each is one function,
patching localstripe's classes or adding a route at startup, with a comment saying what real
Stripe does. The ones marked "harness only" have no Stripe counterpart: they let a test
simulate what it cannot otherwise provoke (the 24 h expiry of idempotency keys, a 429).

| extension                     | real Stripe                                                  |
|-------------------------------|--------------------------------------------------------------|
| standalone_invoices           | POST /v1/invoices without a subscription, with auto_advance, |
|                               | collection_method, days_until_due, currency,                 |
|                               | pending_invoice_items_behavior                               |
| items_join_their_invoice      | POST /v1/invoiceitems with invoice=in_... adds a line        |
| paginated_invoice_lines       | GET /v1/invoices/{id}/lines?starting_after=...               |
| finalize_route                | POST /v1/invoices/{id}/finalize (draft -> open)              |
| pay_like_stripe               | POST /v1/invoices/{id}/pay: a decline is a 402 card_error     |
|                               | and invoice.payment_failed; success sends invoice.paid too;  |
|                               | `payment_method` charges that one; a customer without a      |
|                               | default payment method gets 400                              |
| customer_payment_methods      | GET /v1/customers/{id}/payment_methods, newest first         |
| checkout_sessions             | POST /v1/checkout/sessions (mode=setup), GET .../{id}        |
| completed_checkout            | harness only: POST /_config/checkout_sessions/{id}/complete  |
|                               | does what the customer does on Checkout's page (saves a card)|
| declined_cards                | 4000000000000002 declines every charge                       |
| send_route                    | POST /v1/invoices/{id}/send                                  |
| void_like_stripe              | POST /v1/invoices/{id}/void on an invoice never charged      |
| metadata_search_routes        | GET /v1/customers/search, /v1/invoices/search (metadata)     |
| listed_invoices               | GET /v1/invoices?created[gte]=..&created[lt]=.., newest      |
|                               | first, paged by starting_after                               |
| changed_totals                | harness only: POST /_config/invoices/{id}/total sets the     |
|                               | total Stripe shows (as a discount or tax applied at Stripe)  |
| idempotency_keys              | Idempotency-Key: same key -> same response                   |
| injected_rate_limits          | harness only: POST /_config/rate_limit answers the next N    |
|                               | API requests with 429                                        |

Webhook deliveries (``POST /_config/webhooks/{id}``) are localstripe's own, signed the way
Stripe signs them; the extensions only add the events real Stripe sends (invoice.finalized,
invoice.paid, invoice.payment_failed, invoice.sent, invoice.voided; payment_method.attached,
setup_intent.succeeded and checkout.session.completed when a Checkout session completes).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import sys
import time

# Real Stripe's limit on the items of one invoice.
MAX_INVOICE_ITEMS = 250


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)

    # The real attribute lives on localstripe.resources.Store (server.py only
    # imports the `store` instance); patching the class covers every call site.
    import localstripe.resources as resources

    resources.Store.dump_to_disk = lambda self: None
    resources.Store.try_load_from_disk = lambda self: None

    # Before server.py is imported: it registers `resources.extra_apis` as it finds them.
    extend_resources()
    import localstripe.server as server
    from aiohttp import web

    extend_app(server.app)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    web.run_app(server.app, host=args.host, port=args.port, print=print)


def extend_resources() -> None:
    """The extensions to localstripe's objects and their extra API routes."""
    standalone_invoices()
    items_join_their_invoice()
    paginated_invoice_lines()
    finalize_route()
    pay_like_stripe()
    declined_cards()
    send_route()
    void_like_stripe()
    customer_payment_methods()
    checkout_sessions()
    listed_invoices()


def extend_app(app) -> None:
    """The extensions to the app itself, before it starts (aiohttp freezes its routes and
    middlewares then)."""
    metadata_search_routes(app)
    completed_checkout(app)
    changed_totals(app)
    # The first middleware in the list runs first. Rate limiting comes before idempotency, as
    # at Stripe: a 429 is answered before any endpoint runs, so its key stays unused.
    app.middlewares.insert(0, idempotency_keys(app))
    app.middlewares.insert(0, injected_rate_limits(app))


# -- helpers -----------------------------------------------------------------------------------


def _r():
    import localstripe.resources as resources

    return resources


def _user_error(status: int, message: str, error_type: str = "invalid_request_error", **contents):
    """localstripe's UserError with Stripe's error `type` (UserError always says
    invalid_request_error; stripe-python picks its exception class by status and type)."""
    err = _r().UserError(status, message, dict(contents))
    err.body["error"]["type"] = error_type
    return err


def _flag(value) -> bool | None:
    """A form-encoded boolean ('true'/'false') as a bool; None stays None."""
    if value is None or isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise _user_error(400, f"Invalid boolean: {value}")


def _event(kind: str, obj) -> None:
    r = _r()
    r.schedule_webhook(r.Event(kind, obj))


@contextlib.contextmanager
def _pending_items_held(customer: str):
    """Hide the customer's pending invoice items while a standalone invoice is built: stock
    localstripe sweeps them all onto every new invoice (Stripe's old `include` behaviour)."""
    r = _r()
    held = [ii for ii in r.InvoiceItem._api_list_all(None, customer=customer, limit=100_000)._list]
    for ii in held:
        ii.invoice = "held"
    try:
        yield
    finally:
        for ii in held:
            ii.invoice = None


def _finalize(inv) -> None:
    """draft -> open, as Stripe's finalization does: the invoice gets a number and a hosted
    page, its total is fixed, and invoice.finalized is sent. A zero total is paid at once."""
    r = _r()
    inv._finalize()
    inv.number = f"LS-{inv.id[-8:].upper()}-0001"
    inv.hosted_invoice_url = f"https://invoice.stripe.com/i/localstripe/{inv.id}"
    if inv.collection_method == "send_invoice" and inv.days_until_due is not None:
        inv.due_date = inv.status_transitions["finalized_at"] + 86_400 * int(inv.days_until_due)
    _event("invoice.finalized", inv)
    if inv.total <= 0:  # localstripe's status is then already 'paid'
        inv.status_transitions["paid_at"] = int(time.time())
        r.schedule_webhook(r.Event("invoice.paid", inv))
        r.schedule_webhook(r.Event("invoice.payment_succeeded", inv))


# -- invoices ----------------------------------------------------------------------------------


def standalone_invoices() -> None:
    """Real Stripe creates an invoice for a customer alone (no subscription), as a draft, with
    `auto_advance` (false: Stripe never finalizes or charges it by itself), `collection_method`
    (charge_automatically, or send_invoice with `days_until_due`), `currency`, `metadata`,
    and `pending_invoice_items_behavior` (exclude: no pending item is swept onto it). Stock
    localstripe needs a subscription or pending items and answers 500 to those fields."""
    r = _r()
    Invoice = r.Invoice
    original = Invoice._api_create.__func__

    # Fields every invoice has at Stripe, exported by localstripe's _export (which includes
    # class attributes); subscription invoices keep these defaults.
    Invoice.auto_advance = True
    Invoice.days_until_due = None
    Invoice.due_date = None
    Invoice.hosted_invoice_url = None
    Invoice.number = None

    def create(cls, customer=None, subscription=None, auto_advance=None, collection_method=None,
               days_until_due=None, pending_invoice_items_behavior=None, currency=None,
               metadata=None, description=None, **rest):
        if subscription is not None:
            return original(cls, customer=customer, subscription=subscription, metadata=metadata,
                            description=description, pending_invoice_items_behavior=pending_invoice_items_behavior,
                            **rest)
        if rest:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(rest)))
        method = collection_method or "charge_automatically"
        days = r.try_convert_to_int(days_until_due)
        if method not in ("charge_automatically", "send_invoice"):
            raise _user_error(400, f"Invalid collection_method: {method}", param="collection_method")
        if method == "send_invoice" and not isinstance(days, int):
            raise _user_error(400, "Missing days_until_due or due_date for a send_invoice invoice", param="days_until_due")
        if method == "charge_automatically" and days is not None:
            raise _user_error(400, "days_until_due is only for send_invoice invoices", param="days_until_due")
        behavior = pending_invoice_items_behavior or "exclude"
        if behavior not in ("exclude", "include"):
            raise _user_error(400, f"Invalid pending_invoice_items_behavior: {behavior}")
        if metadata is not None and not isinstance(metadata, dict):
            raise _user_error(400, "Invalid metadata", param="metadata")
        holding = _pending_items_held(customer) if behavior == "exclude" and isinstance(customer, str) else contextlib.nullcontext()
        with holding:
            inv = cls(customer=customer, metadata=metadata, description=description)
        inv._currency_fixed = currency is not None  # else the first item's currency decides
        if currency is not None:
            inv.currency = str(currency).lower()
        inv.auto_advance = bool(_flag(auto_advance)) if auto_advance is not None else True
        inv.collection_method = method
        inv.days_until_due = days
        inv.attempt_count = 0
        inv.attempted = False
        return inv

    Invoice._api_create = classmethod(create)


def items_join_their_invoice() -> None:
    """Real Stripe adds an invoice item created with `invoice=in_...` to that invoice's lines
    (a draft only; at most 250 items; in the invoice's currency), and takes the item's
    `period[start]`/`period[end]`. Stock localstripe only notes the id, so the line never
    shows, and knows only flat period_start/period_end."""
    r = _r()
    InvoiceItem = r.InvoiceItem
    original = InvoiceItem._api_create.__func__

    def create(cls, **data):
        period = data.pop("period", None)
        if isinstance(period, dict):
            data["period_start"], data["period_end"] = period.get("start"), period.get("end")
        invoice_id = data.get("invoice")
        inv = r.Invoice._api_retrieve(invoice_id) if isinstance(invoice_id, str) else None
        if inv is not None:
            if inv.status != "draft":
                raise _user_error(400, "You can only add invoice items to draft invoices.", param="invoice")
            if len(inv.lines._list) >= MAX_INVOICE_ITEMS:
                raise _user_error(400, f"An invoice can have at most {MAX_INVOICE_ITEMS} invoice items.")
            currency = str(data.get("currency", "")).lower()
            fixed = inv.lines._list or getattr(inv, "_currency_fixed", False)
            if fixed and currency != inv.currency:
                raise _user_error(400, f"The item's currency ({currency}) differs from the invoice's ({inv.currency}).")
        item = original(cls, **data)
        if inv is not None:
            if not inv.lines._list:
                inv.currency = item.currency
            inv.lines._list.append(r.InvoiceLineItem(item))
        return item

    InvoiceItem._api_create = classmethod(create)


def paginated_invoice_lines() -> None:
    """Real Stripe pages an invoice's lines (`limit` up to 100, `starting_after`), which
    stripe-python's auto-paging sends; stock localstripe refuses `starting_after`."""
    r = _r()

    def list_lines(cls, id, limit=None, starting_after=None, **kwargs):
        if kwargs:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
        obj = cls._api_retrieve(id)
        lines = r.List("/v1/invoices/" + id + "/lines", limit=limit, starting_after=starting_after)
        lines._list = obj.lines._list
        return lines

    r.Invoice._api_list_lines = classmethod(list_lines)
    _set_extra_api("GET", "/v1/invoices/{id}/lines", r.Invoice._api_list_lines)


def finalize_route() -> None:
    """Real Stripe: POST /v1/invoices/{id}/finalize moves a draft to open (`auto_advance`
    may be set at the same time), numbers it, fixes its total and sends invoice.finalized;
    a non-draft is refused with 400."""
    r = _r()

    def finalize(id, auto_advance=None, **kwargs):
        if kwargs:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
        inv = r.Invoice._api_retrieve(id)
        if inv.status != "draft":
            raise _user_error(400, "This invoice is already finalized, you can't re-finalize a non-draft invoice.")
        if auto_advance is not None:
            inv.auto_advance = _flag(auto_advance)
        _finalize(inv)
        return inv

    _set_extra_api("POST", "/v1/invoices/{id}/finalize", finalize)


def pay_like_stripe() -> None:
    """Real Stripe's POST /v1/invoices/{id}/pay finalizes a draft first, charges the
    customer's default payment method, and on success sends invoice.payment_succeeded AND
    invoice.paid. A declined charge answers 402 with a `card_error` (code card_declined),
    leaves the invoice open, counts the attempt and sends invoice.payment_failed. Stock
    localstripe skips the finalization, sends only payment_succeeded, and on a decline
    answers 200 without any event. It also refuses Stripe's `off_session` and `payment_method`
    parameters, and answers 404 (not Stripe's 400) for a customer without a payment method."""
    r = _r()
    Invoice = r.Invoice
    original_pay = Invoice._api_pay_invoice.__func__
    original_success = Invoice._on_payment_success

    def on_payment_success(self):
        original_success(self)
        _event("invoice.paid", self)

    Invoice._on_payment_success = on_payment_success

    def pay(cls, id, off_session=None, payment_method=None, **kwargs):
        if kwargs:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
        _flag(off_session)  # Stripe's default is off-session, which is how localstripe charges
        inv = cls._api_retrieve(id)
        if inv.status == "draft":
            _finalize(inv)
        if inv.status == "paid":
            raise _user_error(400, "Invoice is already paid", code="invoice_already_paid")
        if payment_method is not None:
            pm = r.PaymentMethod._api_retrieve(payment_method)
            if pm.customer != inv.customer:
                raise _user_error(400, f"The PaymentMethod {payment_method} does not belong to the invoice's customer.",
                                  param="payment_method")
        else:
            pm = r.Customer._api_retrieve(inv.customer)._get_default_payment_method_or_source()
        if pm is None and inv.total > 0:
            # Real Stripe: 400, nothing charged, no attempt (stock localstripe says 404).
            raise _user_error(400, "This customer has no attached payment source or default payment method. "
                                   "Please consider adding a default payment method.")
        inv.attempt_count = getattr(inv, "attempt_count", 0) + 1
        inv.attempted = True
        if payment_method is None or inv.total <= 0:
            inv = original_pay(cls, id)
        else:  # localstripe's own charge, with the given method instead of the default
            inv._draft = False
            pi = r.PaymentIntent(amount=inv.total, currency=inv.currency, customer=inv.customer, payment_method=pm.id)
            inv.payment_intent = pi.id
            pi.invoice = inv.id
            pi._confirm(on_failure_now=lambda: None)
        if inv.status == "paid":
            return inv
        charge = r.PaymentIntent._api_retrieve(inv.payment_intent).latest_charge if inv.payment_intent else None
        if charge is not None and charge.status == "failed":
            _event("invoice.payment_failed", inv)
            raise _user_error(402, charge.failure_message or "Your card was declined.", "card_error",
                              code=charge.failure_code or "card_declined", decline_code="generic_decline",
                              charge=charge.id)
        return inv

    Invoice._api_pay_invoice = classmethod(pay)
    _set_extra_api("POST", "/v1/invoices/{id}/pay", Invoice._api_pay_invoice)


def declined_cards() -> None:
    """Real Stripe declines every charge on the test card 4000000000000002 (card_declined,
    generic_decline). Stock localstripe only refuses to attach it, so a customer whose default
    payment method it is would be charged successfully."""
    PaymentMethod = _r().PaymentMethod
    original = PaymentMethod._charging_is_declined

    def charging_is_declined(self):
        if self.type == "card" and self._card_number == "4000000000000002":
            return True
        return original(self)

    PaymentMethod._charging_is_declined = charging_is_declined


def send_route() -> None:
    """Real Stripe: POST /v1/invoices/{id}/send emails a send_invoice invoice to the customer
    (finalizing a draft first) and sends invoice.sent; other collection methods get 400."""
    r = _r()

    def send(id, **kwargs):
        if kwargs:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
        inv = r.Invoice._api_retrieve(id)
        if inv.collection_method != "send_invoice":
            raise _user_error(400, "You can only manually send an invoice if its collection method is 'send_invoice'.")
        if inv.status == "draft":
            _finalize(inv)
        if inv.status not in ("open", "paid"):
            raise _user_error(400, f"You cannot send an invoice whose status is {inv.status}.")
        _event("invoice.sent", inv)
        return inv

    _set_extra_api("POST", "/v1/invoices/{id}/send", send)


def void_like_stripe() -> None:
    """Real Stripe voids an open invoice whether or not a charge was tried, and sends
    invoice.voided. Stock localstripe cancels the payment intent unconditionally, which fails
    (400) on an invoice that was never charged."""
    r = _r()
    original = r.Invoice._api_void_invoice.__func__

    def void(cls, id, **kwargs):
        if kwargs:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
        inv = cls._api_retrieve(id)
        if inv.payment_intent is not None:
            inv = original(cls, id)
        else:
            if inv.status not in ("draft", "open"):
                raise _user_error(400, f"You cannot void an invoice whose status is {inv.status}.")
            inv._draft = False
            inv._voided = True
            inv.status_transitions["voided_at"] = int(time.time())
        _event("invoice.voided", inv)
        return inv

    r.Invoice._api_void_invoice = classmethod(void)
    _set_extra_api("POST", "/v1/invoices/{id}/void", r.Invoice._api_void_invoice)


def customer_payment_methods() -> None:
    """Real Stripe: GET /v1/customers/{id}/payment_methods lists the payment methods attached to
    the customer (every type, or `type`), newest first, paged by `limit`/`starting_after`."""
    r = _r()

    def list_methods(id, type=None, limit=None, starting_after=None, **kwargs):
        if kwargs:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
        r.Customer._api_retrieve(id)  # 404 for an unknown customer
        found = r.List(f"/v1/customers/{id}/payment_methods", limit=limit, starting_after=starting_after)
        methods = [obj for key, obj in r.store.items() if key.startswith("payment_method:")
                   and obj.customer == id and (type is None or obj.type == type)]
        found._list = sorted(methods, key=lambda pm: pm.created, reverse=True)
        return found

    _set_extra_api("GET", "/v1/customers/{id}/payment_methods", list_methods)


def checkout_sessions() -> None:
    """Real Stripe: POST /v1/checkout/sessions with mode=setup makes a session whose `url` is
    Stripe's hosted page where the customer saves a payment method (attached to `customer`,
    through a SetupIntent); it is `open` until completed and expires after 24 h. Only setup
    mode is here (payment and subscription modes answer 400)."""
    r = _r()

    class CheckoutSession(r.StripeObject):
        object = "checkout.session"
        _id_prefix = "cs_test_"

        def __init__(self, mode=None, customer=None, success_url=None, cancel_url=None,
                     allowed_payment_method_types=None, currency=None, metadata=None, **kwargs):
            if kwargs:
                raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
            if mode != "setup":
                raise _user_error(400, f"localstripe makes setup-mode Checkout sessions only, not {mode!r}", param="mode")
            if customer is not None:
                r.Customer._api_retrieve(customer)
            types = allowed_payment_method_types
            if types is not None and not (isinstance(types, list) and types and all(isinstance(t, str) for t in types)):
                raise _user_error(400, "Invalid allowed_payment_method_types", param="allowed_payment_method_types")
            if types is None and currency is None:
                raise _user_error(400, "currency is required in setup mode when allowed_payment_method_types is not set",
                                  param="currency")
            super().__init__()
            self.mode = mode
            self.customer = customer
            self.success_url = success_url
            self.cancel_url = cancel_url
            self.payment_method_types = types or ["card"]
            self.currency = currency
            self.metadata = metadata or {}
            self.status = "open"
            self.setup_intent = None
            self.expires_at = self.created + 86_400
            self.url = f"https://checkout.stripe.com/c/pay/{self.id}"

    r.CheckoutSession = CheckoutSession
    _set_extra_api("POST", "/v1/checkout/sessions", lambda **data: CheckoutSession(**data))
    _set_extra_api("GET", "/v1/checkout/sessions/{id}", lambda id: CheckoutSession._api_retrieve(id))


def listed_invoices() -> None:
    """Real Stripe: GET /v1/invoices lists invoices newest first, filtered by `created` (a
    timestamp, or a dict of gt/gte/lt/lte) and `customer`, paged by `limit`/`starting_after`.
    Stock localstripe refuses `created` and sorts by its own `date`."""
    r = _r()

    def list_all(cls, url, customer=None, created=None, limit=None, starting_after=None, **kwargs):
        if kwargs:
            raise _user_error(400, "Received unknown parameters: " + ", ".join(sorted(kwargs)))
        bounds = created if isinstance(created, dict) else ({"eq": created} if created is not None else {})
        tests = {"gt": lambda c, v: c > v, "gte": lambda c, v: c >= v, "lt": lambda c, v: c < v,
                 "lte": lambda c, v: c <= v, "eq": lambda c, v: c == v}
        checks = []
        for op, value in bounds.items():
            number = r.try_convert_to_int(value)
            if op not in tests or not isinstance(number, int):
                raise _user_error(400, f"Invalid created[{op}]: {value}", param="created")
            checks.append((tests[op], number))
        found = r.List(url, limit=limit, starting_after=starting_after)
        found._list = sorted(
            (obj for key, obj in r.store.items() if key.startswith("invoice:")
             and (customer is None or obj.customer == customer) and all(t(obj.created, v) for t, v in checks)),
            key=lambda inv: (inv.created, inv.id), reverse=True)
        return found

    r.Invoice._api_list_all = classmethod(list_all)


def changed_totals(app) -> None:
    """Harness only: POST /_config/invoices/{id}/total (form field `total`, Stripe's integer
    unit) makes the invoice show that total, as a discount, a tax or an edit made at Stripe
    would: the difference is booked as localstripe's `starting_balance`, which its total
    subtracts. Reconciliation must then flag the invoice (provider_total_differs)."""
    from localstripe.server import json_response

    r = _r()

    async def change(request):
        data = await request.post()
        inv = r.Invoice._api_retrieve(request.match_info["id"])
        wanted = int(data["total"])
        inv.starting_balance = inv.subtotal + inv.tax - wanted
        return json_response(inv._export())

    app.router.add_post("/_config/invoices/{id}/total", change)


def completed_checkout(app) -> None:
    """Harness only: POST /_config/checkout_sessions/{id}/complete (form field `card`, a test
    card number; 4242424242424242 if absent) is what the customer does on the session's page:
    the card becomes a payment method attached to the session's customer (not their default,
    as at Stripe), through a succeeded SetupIntent; payment_method.attached,
    setup_intent.succeeded and checkout.session.completed are sent."""
    from localstripe.server import json_response

    r = _r()

    async def complete(request):
        data = await request.post()
        session = r.CheckoutSession._api_retrieve(request.match_info["id"])
        if session.status != "open":
            raise _user_error(400, f"Checkout session {session.id} is {session.status}")
        number = data.get("card", "4242424242424242")
        pm = r.PaymentMethod(type="card", card={"number": number, "exp_month": "12", "exp_year": "2030", "cvc": "123"})
        intent = r.SetupIntent(customer=session.customer, payment_method_types=session.payment_method_types)
        intent._attach_pm(pm)  # a card whose check declines: 402, and the session stays open
        if session.customer is not None:
            pm.customer = session.customer
            _event("payment_method.attached", pm)
        session.status, session.setup_intent = "complete", intent.id
        _event("setup_intent.succeeded", intent)
        _event("checkout.session.completed", session)
        return json_response(session._export())

    app.router.add_post("/_config/checkout_sessions/{id}/complete", complete)


def metadata_search_routes(app) -> None:
    """Real Stripe searches customers and invoices with its query language
    (`metadata['key']:'value'`, clauses joined by AND), answering a `search_result` list.
    (Its index lags writes by up to a minute; here it is immediate.) Only the metadata
    equality clauses that Meterline sends are understood; anything else is a 400."""
    import re

    from localstripe.server import json_response, unflatten_data

    r = _r()
    clause = re.compile(r"""metadata\[['"]([^'"]+)['"]\]:'((?:[^'\\]|\\.)*)'""")

    def parse(query: str) -> dict[str, str]:
        wanted = {}
        for part in re.split(r"\s+AND\s+", query.strip()):
            m = clause.fullmatch(part.strip())
            if m is None:
                raise _user_error(400, f"localstripe search understands metadata['k']:'v' clauses only: {part!r}")
            wanted[m.group(1)] = re.sub(r"\\(.)", r"\1", m.group(2))
        return wanted

    def route(cls):
        url = f"/v1/{cls.object}s/search"

        async def search(request):
            data = unflatten_data(request.query)
            wanted = parse(str(data.get("query", "")))
            limit = int(data.get("limit", 10))
            found = [
                obj for key, obj in r.store.items()
                if key.startswith(cls.object + ":")
                and all((getattr(obj, "metadata", None) or {}).get(k) == v for k, v in wanted.items())
            ]
            found.sort(key=lambda o: o.created)
            return json_response({
                "object": "search_result", "url": url, "has_more": len(found) > limit, "next_page": None,
                "data": [obj._export() for obj in found[:limit]],
            })

        app.router.add_get(url, search)

    # aiohttp (3.14) tries plain routes before dynamic ones, so /search wins over /{id}.
    route(r.Customer)
    route(r.Invoice)


# -- idempotency keys and rate limits (middlewares) --------------------------------------------


def idempotency_keys(app):
    """Real Stripe saves the status and body of the first POST made with an `Idempotency-Key`
    (per API key) once its endpoint starts running, and answers every retry with that same
    response (header `Idempotent-Replayed: true`), errors included; a retry with other
    parameters is refused (400 idempotency_error), and one that overlaps the first gets 409.
    Keys expire after 24 h. Stock localstripe ignores the header.

    Harness only: DELETE /_config/idempotency_keys forgets every key, as 24 h would, so a
    test can show that a resumed run creates no duplicate even without them; DELETE
    /_config/data (localstripe's reset) forgets them too."""
    from aiohttp import web

    saved: dict[tuple[str, str], tuple[str, int, bytes, str | None]] = {}
    running: set[tuple[str, str]] = set()

    async def forget(request):
        saved.clear()
        return web.Response()

    app.router.add_delete("/_config/idempotency_keys", forget)

    def error(status: int, message: str):
        body = {"error": {"type": "idempotency_error", "message": message}}
        from localstripe.server import json_response

        return json_response(body, status=status)

    @web.middleware
    async def middleware(request, handler):
        key = request.headers.get("Idempotency-Key")
        if request.method == "DELETE" and request.path == "/_config/data":
            saved.clear()
        if request.method != "POST" or not key or not request.path.startswith("/v1/"):
            return await handler(request)
        scope = (request.headers.get("Authorization", ""), key)
        body = await request.read()
        fingerprint = hashlib.sha256(
            b"\0".join([request.method.encode(), request.path_qs.encode(), body])
        ).hexdigest()
        if scope in saved:
            first, status, data, content_type = saved[scope]
            if first != fingerprint:
                return error(400, f"Keys for idempotent requests can only be used with the same parameters "
                                  f"they were first used with. Try using a key other than '{key}' if you meant "
                                  f"to execute a different request.")
            return web.Response(body=data, status=status, content_type=content_type,
                                headers={"Idempotent-Replayed": "true"})
        if scope in running:
            return error(409, "There is currently another in-progress request using this Stripe token "
                              "(probably the same Idempotency-Key); retry later.")
        running.add(scope)
        try:
            response = await handler(request)
        finally:
            running.discard(scope)
        # 401 and 429 are answered before an endpoint runs: Stripe does not save them.
        if response.status not in (401, 429) and isinstance(response, web.Response) and response.body is not None:
            saved[scope] = (fingerprint, response.status, bytes(response.body), response.content_type)
        return response

    return middleware


def injected_rate_limits(app):
    """Harness only. Real Stripe answers 429 (error code rate_limit) when an account sends
    more than its rate (about 100 requests/s live, 25 in test mode). A test provokes it with
    POST /_config/rate_limit (form field `count`): the next `count` requests to /v1/ get 429;
    GET /_config/rate_limit tells how many are left."""
    from aiohttp import web
    from localstripe.server import json_response

    remaining = {"count": 0}

    async def configure(request):
        data = await request.post()
        remaining["count"] = int(data.get("count", "1"))
        return json_response({"remaining": remaining["count"]})

    async def status(request):
        return json_response({"remaining": remaining["count"]})

    app.router.add_post("/_config/rate_limit", configure)
    app.router.add_get("/_config/rate_limit", status)

    @web.middleware
    async def middleware(request, handler):
        if remaining["count"] > 0 and request.path.startswith("/v1/"):
            remaining["count"] -= 1
            return json_response({"error": {
                "type": "invalid_request_error", "code": "rate_limit",
                "message": "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
            }}, status=429)
        return await handler(request)

    return middleware


# -- routes ------------------------------------------------------------------------------------


def _set_extra_api(method: str, url: str, func) -> None:
    """Answer `method url` with `func` (localstripe's "extra API" convention: called with the
    form or JSON fields and the path's `id`), replacing localstripe's own function if it has
    one. server.py registers this list when it is imported, so this runs before that."""
    extra_apis = _r().extra_apis
    for i, (m, u, _) in enumerate(extra_apis):
        if (m, u) == (method, url):
            extra_apis[i] = (method, url, func)
            return
    extra_apis.insert(0, (method, url, func))


if __name__ == "__main__":
    main()
