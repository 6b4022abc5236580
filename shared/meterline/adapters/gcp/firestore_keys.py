"""ApiKeyStore on Firestore: one document per key, named by the key's hash (never the key).

A revoked key keeps its document, with `revoked_at_us` set, so `meterline api-keys list`
still shows it (as revoked) and the authenticator refuses it.
"""

from __future__ import annotations

from meterline.ports import ApiKeyRecord


def _record(key_hash: str, data: dict) -> ApiKeyRecord:
    return ApiKeyRecord(key_hash, data["name"], data["prefix"], data["created_at_us"], data.get("revoked_at_us"))


class FirestoreApiKeyStore:
    COLLECTION = "meterline_api_keys"

    def __init__(self, client):
        self._client = client
        self._collection = client.collection(self.COLLECTION)

    def add(self, record: ApiKeyRecord) -> None:
        data = {"name": record.name, "prefix": record.prefix, "created_at_us": record.created_at_us}
        if record.revoked_at_us is not None:
            data["revoked_at_us"] = record.revoked_at_us
        self._collection.document(record.key_hash).create(data)

    def find(self, key_hash: str) -> ApiKeyRecord | None:
        snap = self._collection.document(key_hash).get()
        if not snap.exists:
            return None
        return _record(key_hash, snap.to_dict())

    def all(self) -> list[ApiKeyRecord]:
        records = [_record(s.id, s.to_dict()) for s in self._collection.stream()]
        return sorted(records, key=lambda r: r.created_at_us)

    def revoke(self, key_hash: str, revoked_at_us: int) -> bool:
        from google.cloud import firestore

        ref = self._collection.document(key_hash)

        @firestore.transactional
        def mark(transaction) -> bool:
            # In a transaction, so that two concurrent revokes report one revocation and the
            # first revocation time is kept.
            snap = ref.get(transaction=transaction)
            if not snap.exists or snap.to_dict().get("revoked_at_us") is not None:
                return False
            transaction.update(ref, {"revoked_at_us": revoked_at_us})
            return True

        return mark(self._client.transaction())
