"""ApiKeyStore on Firestore: one document per key, named by the key's hash (never the key)."""

from __future__ import annotations

from meterline.ports import ApiKeyRecord


class FirestoreApiKeyStore:
    COLLECTION = "meterline_api_keys"

    def __init__(self, client):
        self._collection = client.collection(self.COLLECTION)

    def add(self, record: ApiKeyRecord) -> None:
        self._collection.document(record.key_hash).create(
            {"name": record.name, "prefix": record.prefix, "created_at_us": record.created_at_us}
        )

    def find(self, key_hash: str) -> ApiKeyRecord | None:
        snap = self._collection.document(key_hash).get()
        if not snap.exists:
            return None
        data = snap.to_dict()
        return ApiKeyRecord(key_hash, data["name"], data["prefix"], data["created_at_us"])

    def all(self) -> list[ApiKeyRecord]:
        return [
            ApiKeyRecord(s.id, d["name"], d["prefix"], d["created_at_us"])
            for s in self._collection.stream()
            for d in [s.to_dict()]
        ]
