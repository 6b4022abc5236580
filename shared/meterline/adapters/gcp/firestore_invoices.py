"""InvoiceStore and ProcessedEvents on Firestore.

`meterline_invoices`: one document per invoice, its id the invoice's id (a UUID, always a valid
document id), holding `invoice_documents.invoice_record` as the SQLite adapter stores it: the invoice as a
JSON string (`doc`; Firestore maps would turn Decimals into floats), beside the fields that
queries filter and sort on, rewritten from the invoice on every write.

`meterline_invoice_counters`: one document per customer (id: the SHA-256 of its external id),
`last_sequence` the last number given. Finalizing reads and writes it in the invoice's
transaction, so two finalizations for one customer conflict and one retries with the next
number: a number is given once, and a crash keeps both writes or neither. (One customer's
finalizations are then serialized, about one a second under contention: a billing run
finalizes one invoice per subscription and period.)

`meterline_processed_events`: one document per webhook event id, with `expire_at` for a TTL
policy (Terraform): Stripe retries a webhook for up to 3 days, so 30 days is ample.

Composite indexes that `list` needs (Terraform; the emulator needs none). Every query ends
with `issuing_date DESC, id ASC`; the equality filters in front of them are any non-empty
combination of these, `status` being an `in` when several are asked:
  customer_external_id | subscription_external_id | status | customer_external_id, status |
  subscription_external_id, status | customer_external_id, subscription_external_id |
  customer_external_id, subscription_external_id, status
plus (issuing_date DESC, id ASC) alone, for the list with no filter or a date range only.
`find_by_provider_id` is one equality: the automatic single-field index serves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from meterline.adapters.gcp.ids import doc_id
from meterline.adapters.invoice_documents import invoice_from_document, invoice_record
from meterline.core.invoices import Invoice, invoice_number
from meterline.ports import StaleWrite

INVOICES = "meterline_invoices"
COUNTERS = "meterline_invoice_counters"
PROCESSED_EVENTS = "meterline_processed_events"
# Stripe retries a webhook for 3 days; a redelivery after the TTL would be handled again, and
# states never move backwards, so even that would change nothing.
PROCESSED_RETENTION = timedelta(days=30)


class FirestoreInvoiceStore:
    def __init__(self, client):
        self._client = client
        self._invoices = client.collection(INVOICES)
        self._counters = client.collection(COUNTERS)

    def create(self, invoice: Invoice) -> bool:
        from google.api_core import exceptions

        try:
            # Fails if the document exists, atomically on the server: two runs, one creates it.
            self._invoices.document(invoice.id).create(invoice_record(invoice, 1))
        except exceptions.AlreadyExists:
            return False
        return True

    def get(self, invoice_id: str) -> Invoice | None:
        snap = self._invoices.document(invoice_id).get()
        return invoice_from_document(snap.get("doc")) if snap.exists else None

    def get_many(self, invoice_ids: Sequence[str]) -> dict[str, Invoice]:
        found = {}
        for at in range(0, len(invoice_ids), 300):  # one BatchGetDocuments stream per chunk
            refs = [self._invoices.document(i) for i in invoice_ids[at:at + 300]]
            for snap in self._client.get_all(refs):
                if snap.exists:
                    found[snap.id] = invoice_from_document(snap.get("doc"))
        return found

    def update(self, invoice: Invoice) -> Invoice:
        return self._transact(invoice, lambda transaction: invoice)

    def issue(self, invoice: Invoice, at: datetime) -> Invoice:
        counter = self._counters.document(doc_id(invoice.customer_external_id))

        def issued(transaction) -> Invoice:
            snap = counter.get(transaction=transaction)
            sequence = (snap.get("last_sequence") if snap.exists else 0) + 1
            transaction.set(counter, {"customer_external_id": invoice.customer_external_id, "last_sequence": sequence})
            number = invoice_number(invoice.customer_external_id, sequence)
            return invoice.moved("finalized", at, number=number, sequential_id=sequence)

        return self._transact(invoice, issued)

    def issue_many(self, invoices: Sequence[Invoice], at: datetime) -> list[Invoice | Exception]:
        # One transaction each: a Firestore transaction may not write a counter twice, and
        # one customer's invoices share it.
        outcomes: list[Invoice | Exception] = []
        for invoice in invoices:
            try:
                outcomes.append(self.issue(invoice, at))
            except Exception as failed:  # noqa: BLE001 - the others are written: say which failed
                outcomes.append(failed)
        return outcomes

    def _transact(self, invoice: Invoice, make) -> Invoice:
        """In ONE transaction: check that the stored version is still `invoice.version` (else
        StaleWrite), then store `make(transaction)` as the next version. Under contention
        Firestore retries the whole function, so a retry that finds a newer version raises
        instead of overwriting, and `make`'s own reads (the counter) are read again."""
        from google.cloud import firestore

        ref = self._invoices.document(invoice.id)

        @firestore.transactional
        def write(transaction) -> Invoice:
            # Every read before any write: Firestore transactions require it.
            snap = ref.get(transaction=transaction)
            if (snap.get("version") if snap.exists else 0) != invoice.version:  # 0: never stored
                raise StaleWrite(invoice.id)
            new = make(transaction)
            transaction.set(ref, invoice_record(new, invoice.version + 1))
            return replace(new, version=invoice.version + 1)

        return write(self._client.transaction(max_attempts=5))

    def list(
        self,
        *,
        customer_external_id: str | None = None,
        subscription_external_id: str | None = None,
        statuses: Sequence[str] | None = None,
        issuing_date_from: date | None = None,
        issuing_date_to: date | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[Invoice], int]:
        from google.cloud import firestore
        from google.cloud.firestore_v1.base_query import FieldFilter

        if statuses is not None and not statuses:
            return [], 0  # Firestore refuses an empty `in`; no status asked matches nothing
        query = self._invoices
        for field, op, value in (
            ("customer_external_id", "==", customer_external_id),
            ("subscription_external_id", "==", subscription_external_id),
            ("status", "in", None if statuses is None else list(statuses)),
            ("issuing_date", ">=", issuing_date_from and issuing_date_from.isoformat()),
            ("issuing_date", "<=", issuing_date_to and issuing_date_to.isoformat()),
        ):
            if value is not None:
                query = query.where(filter=FieldFilter(field, op, value))
        total = query.count().get()[0][0].value
        page = query.order_by("issuing_date", direction=firestore.Query.DESCENDING).order_by("id")
        if offset:
            # NOTE: Firestore bills skipped documents as reads; the invoices API pages at most
            # 100 at a time, and a customer has one invoice per subscription and period.
            page = page.offset(offset)
        if limit is not None:
            page = page.limit(limit)
        return [invoice_from_document(snap.get("doc")) for snap in page.stream()], total

    def find_by_provider_id(self, provider_invoice_id: str) -> Invoice | None:
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = self._invoices.where(filter=FieldFilter("provider_invoice_id", "==", provider_invoice_id)).limit(1)
        return next((invoice_from_document(snap.get("doc")) for snap in query.stream()), None)


class FirestoreProcessedEvents:
    def __init__(self, client):
        self._events = client.collection(PROCESSED_EVENTS)

    def seen(self, event_id: str) -> bool:
        return self._events.document(doc_id(event_id)).get().exists

    def first_time(self, event_id: str) -> bool:
        from google.api_core import exceptions

        now = datetime.now(UTC)
        data = {"event_id": event_id, "seen_at": now, "expire_at": now + PROCESSED_RETENTION}
        try:
            # Fails if the document exists, atomically on the server. Stripe's ids are short and
            # safe, but the id is hashed anyway (any text then makes a valid document id).
            self._events.document(doc_id(event_id)).create(data)
        except exceptions.AlreadyExists:
            return False
        return True
