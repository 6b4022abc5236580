"""CatalogStore on Firestore: one collection per kind, one document per code/external_id.

Document ids are the SHA-256 of the key (`catalog_documents.doc_id`): Lago codes are free text, and a raw code could hold
'/' or be '.', '..' or '__x__', which Firestore refuses as ids. The key is kept in a field
(`code` or `external_id`) for ordering and reading.

The Lago-shaped model is stored as a JSON string (`doc`: `to_document()`, the definition and
its timestamps, by `meterline.adapters.catalog_documents`), not as Firestore maps: Firestore refuses arrays nested in arrays and integers
past 64 bits, both of which a free-form field such as a customer's billing_configuration may
hold, and a JSON string round-trips exactly the text the SQLite adapter stores. Nothing
queries inside the document.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from meterline.adapters.catalog_documents import dump_document, dump_records, load_document, load_records
from meterline.adapters.gcp.ids import doc_id
from meterline.core.catalog import BillableMetric, Customer, Plan, Stamped, Subscription
from meterline.core.subscriptions import SubscriptionHistory, history_customer
from meterline.ports import AlreadyExists, StaleWrite

BILLABLE_METRICS = "meterline_billable_metrics"
PLANS = "meterline_plans"
CUSTOMERS = "meterline_customers"
SUBSCRIPTIONS = "meterline_subscriptions"

S = TypeVar("S", bound=Stamped)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FirestoreCatalogStore:
    def __init__(self, client, clock: Callable[[], datetime] = _utc_now):
        self._client = client
        self._clock = clock  # stamps created_at / updated_at
        self._metrics = client.collection(BILLABLE_METRICS)
        self._plans = client.collection(PLANS)
        self._customers = client.collection(CUSTOMERS)
        self._subscriptions = client.collection(SUBSCRIPTIONS)

    # -- documents keyed by one field --------------------------------------------------------

    def _put(self, collection, field: str, key: str, model: S, create_only: bool) -> S:
        from google.api_core import exceptions
        from google.cloud import firestore

        ref = collection.document(doc_id(key))
        if create_only:
            written = model.stamped_over(None, self._clock())
            try:
                ref.create({field: key, "doc": dump_document(written)})  # fails if it exists, atomically on the server
            except exceptions.AlreadyExists:
                raise AlreadyExists(key) from None
            return written

        @firestore.transactional
        def upsert(transaction) -> S:
            # The stored stamps are read in the transaction that writes: a concurrent put
            # makes Firestore run this again on the newer document.
            snap = ref.get(transaction=transaction)
            stored = load_document(type(model), snap.get("doc")) if snap.exists else None
            written = model.stamped_over(stored, self._clock())
            if written is not stored:
                transaction.set(ref, {field: key, "doc": dump_document(written)})
            return written

        return upsert(self._client.transaction(max_attempts=5))

    @staticmethod
    def _get(collection, key: str, model: type[S]) -> S | None:
        snap = collection.document(doc_id(key)).get()
        return load_document(model, snap.get("doc")) if snap.exists else None

    @staticmethod
    def _list(collection, field: str, model: type[S], offset: int, limit: int | None) -> tuple[list[S], int]:
        total = collection.count().get()[0][0].value
        query = collection.order_by(field)
        if offset:
            # NOTE: Firestore bills the skipped documents as reads; catalogs are small, and
            # customers lists are paged at most 100 at a time from the admin API.
            query = query.offset(offset)
        if limit is not None:
            query = query.limit(limit)
        return [load_document(model, s.get("doc")) for s in query.stream()], total

    def _delete(self, collection, key: str, model: type[S]) -> S | None:
        from google.cloud import firestore

        ref = collection.document(doc_id(key))

        @firestore.transactional
        def delete(transaction) -> S | None:
            snap = ref.get(transaction=transaction)
            if not snap.exists:
                return None
            transaction.delete(ref)
            return load_document(model, snap.get("doc"))

        return delete(self._client.transaction(max_attempts=5))

    def put_billable_metric(self, metric: BillableMetric, *, create_only: bool = False) -> BillableMetric:
        return self._put(self._metrics, "code", metric.code, metric, create_only)

    def get_billable_metric(self, code: str) -> BillableMetric | None:
        return self._get(self._metrics, code, BillableMetric)

    def list_billable_metrics(self, offset: int = 0, limit: int | None = None) -> tuple[list[BillableMetric], int]:
        return self._list(self._metrics, "code", BillableMetric, offset, limit)

    def delete_billable_metric(self, code: str) -> BillableMetric | None:
        return self._delete(self._metrics, code, BillableMetric)

    def put_plan(self, plan: Plan, *, create_only: bool = False) -> Plan:
        return self._put(self._plans, "code", plan.code, plan, create_only)

    def get_plan(self, code: str) -> Plan | None:
        return self._get(self._plans, code, Plan)

    def list_plans(self, offset: int = 0, limit: int | None = None) -> tuple[list[Plan], int]:
        return self._list(self._plans, "code", Plan, offset, limit)

    def delete_plan(self, code: str) -> Plan | None:
        return self._delete(self._plans, code, Plan)

    def put_customer(self, customer: Customer) -> Customer:
        return self._put(self._customers, "external_id", customer.external_id, customer, False)

    def get_customer(self, external_id: str) -> Customer | None:
        return self._get(self._customers, external_id, Customer)

    def list_customers(self, offset: int = 0, limit: int | None = None) -> tuple[list[Customer], int]:
        return self._list(self._customers, "external_id", Customer, offset, limit)

    def delete_customer(self, external_id: str) -> Customer | None:
        return self._delete(self._customers, external_id, Customer)

    # -- subscription histories --------------------------------------------------------------

    def get_subscription_history(self, external_id: str) -> SubscriptionHistory:
        snap = self._subscriptions.document(doc_id(external_id)).get()
        if not snap.exists:
            return SubscriptionHistory(external_id, (), 0)
        data = snap.to_dict()
        return SubscriptionHistory(external_id, load_records(data["records"]), data["version"])

    def put_subscription_history(self, external_id: str, records: Sequence[Subscription], *, version: int) -> None:
        from google.cloud import firestore

        customer = history_customer(external_id, records)
        ref = self._subscriptions.document(doc_id(external_id))
        data: dict[str, Any] = {
            "external_id": external_id,
            "external_customer_id": customer,
            "version": version + 1,
            "records": dump_records(records),
        }

        @firestore.transactional
        def write(transaction) -> None:
            # Read and write in one transaction: under contention Firestore retries it, and a
            # retry that finds a newer version raises StaleWrite instead of overwriting.
            snap = ref.get(transaction=transaction)
            stored = snap.get("version") if snap.exists else 0
            if stored != version:
                raise StaleWrite(external_id)
            transaction.set(ref, data)

        write(self._client.transaction(max_attempts=5))

    def list_subscriptions(self, external_customer_id: str | None = None) -> list[Subscription]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        if external_customer_id is None:
            snaps = list(self._subscriptions.order_by("external_id").stream())
        else:
            # Equality only (no order_by on another field), so no composite index is needed;
            # one customer's subscriptions are few, and are sorted here.
            query = self._subscriptions.where(filter=FieldFilter("external_customer_id", "==", external_customer_id))
            snaps = sorted(query.stream(), key=lambda s: s.get("external_id"))
        return [record for snap in snaps for record in load_records(snap.get("records"))]

