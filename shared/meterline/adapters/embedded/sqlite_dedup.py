"""The dedup claims on SQLite (GCP: `adapters.gcp.firestore_dedup`, the same rules).

Its table is created with the database (`meterline.adapters.embedded.sqlite`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.core.events import Event
from meterline.ports import Claim


class SqliteDedupStore:
    """The dedup claims (GCP: `adapters.gcp.firestore_dedup`, the same rules). Claims are kept
    for good: here they cost only disk, and a resend of any age is recognised."""

    def __init__(self, db: SqliteDatabase):
        self._db = db

    def claim(
        self, events: Sequence[Event], *, stale_after_s: float = float("inf"), take_over: bool = False
    ) -> list[Claim]:
        claims: list[Claim] = []
        now = time.time()
        with self._db.write() as conn:
            for event in events:
                digest = event.payload_hash()
                row = conn.execute(
                    "SELECT payload_hash, claimed_at, COALESCE(touched_at, claimed_at) FROM dedup "
                    "WHERE external_subscription_id = ? AND transaction_id = ?",
                    event.key,
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO dedup (external_subscription_id, transaction_id, payload_hash, state, claimed_at, "
                        "touched_at) VALUES (?, ?, ?, 'claimed', ?, ?)",
                        (*event.key, digest, now, now),
                    )
                    claims.append(Claim.NEW)
                elif row[0] == digest:
                    if now - row[1] < stale_after_s:
                        # An attempt may be alive: refresh the claim, so no other payload takes it over.
                        self._set(conn, event, touched_at=now)
                        claims.append(Claim.RETRY)
                    elif take_over:
                        self._set(conn, event, claimed_at=now, touched_at=now)
                        claims.append(Claim.RETRY)
                    else:
                        claims.append(Claim.SETTLED)
                elif now - row[2] < stale_after_s:
                    claims.append(Claim.CONFLICT)
                elif take_over:
                    self._set(conn, event, payload_hash=digest, claimed_at=now, touched_at=now)
                    claims.append(Claim.NEW)
                else:
                    claims.append(Claim.STALE)
        return claims

    @staticmethod
    def _set(conn: sqlite3.Connection, event: Event, **columns) -> None:
        assigned = ", ".join(f"{name} = ?" for name in columns)  # names are this module's own
        conn.execute(
            f"UPDATE dedup SET {assigned} WHERE external_subscription_id = ? AND transaction_id = ?",
            (*columns.values(), *event.key),
        )
