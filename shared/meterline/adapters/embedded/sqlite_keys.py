"""ApiKeyStore on SQLite: one row per key, by the key's hash (never the key); a revoked key
keeps its row, with `revoked_at_us` set (GCP: `adapters.gcp.firestore_keys`).

Its table is created with the database (`meterline.adapters.embedded.sqlite`).
"""

from __future__ import annotations

from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.ports import ApiKeyRecord


class SqliteApiKeyStore:
    def __init__(self, db: SqliteDatabase):
        self._db = db

    _COLUMNS = "key_hash, name, prefix, created_at_us, revoked_at_us"

    def add(self, record: ApiKeyRecord) -> None:
        with self._db.write() as conn:
            conn.execute(
                f"INSERT INTO api_keys ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (record.key_hash, record.name, record.prefix, record.created_at_us, record.revoked_at_us),
            )

    def find(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._db.connect().execute(
            f"SELECT {self._COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)
        ).fetchone()
        return ApiKeyRecord(*row) if row else None

    def all(self) -> list[ApiKeyRecord]:
        rows = self._db.connect().execute(f"SELECT {self._COLUMNS} FROM api_keys ORDER BY created_at_us")
        return [ApiKeyRecord(*r) for r in rows]

    def revoke(self, key_hash: str, revoked_at_us: int) -> bool:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at_us = ? WHERE key_hash = ? AND revoked_at_us IS NULL",
                (revoked_at_us, key_hash),
            )
        return cur.rowcount == 1
