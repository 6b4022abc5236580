"""The event queue on SQLite (Pub/Sub's stand-in), with leases, and its dead letters.

Its tables are created with the database (`meterline.adapters.embedded.sqlite`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from meterline.adapters.embedded.sqlite import SqliteDatabase
from meterline.core.messages import UndecodableMessage, decode_message
from meterline.ports import DeadLetter, PublishFailed


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    data: bytes
    attempts: int
    published_at: float | None = None  # epoch seconds, for the "delay since publish" log line


class SqliteQueue:
    """EventBus on SQLite, with leases and a dead-letter table, like a Pub/Sub subscription."""

    def __init__(self, db: SqliteDatabase, max_attempts: int = 5):
        self._db = db
        self.max_attempts = max_attempts

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        try:
            with self._db.write() as conn:
                cur = conn.execute(
                    "INSERT INTO queue (data, attributes, published_at) VALUES (?, ?, ?)",
                    (data, orjson.dumps(attributes).decode(), time.time()),
                )
        except sqlite3.Error as exc:
            raise PublishFailed(str(exc)) from exc
        return str(cur.lastrowid)

    def lease(self, max_messages: int, lease_seconds: float = 60.0) -> list[QueuedMessage]:
        """Take up to N messages whose lease has run out; each lease counts as a delivery attempt."""
        now = time.time()
        with self._db.write() as conn:
            rows = conn.execute(
                "UPDATE queue SET attempts = attempts + 1, leased_until = ? WHERE id IN "
                "(SELECT id FROM queue WHERE leased_until <= ? ORDER BY id LIMIT ?) "
                "RETURNING id, data, attempts, published_at",
                (now + lease_seconds, now, max_messages),
            ).fetchall()
        return sorted((QueuedMessage(r[0], r[1], r[2], r[3]) for r in rows), key=lambda m: m.id)

    def ack(self, message_id: int) -> None:
        with self._db.write() as conn:
            conn.execute("DELETE FROM queue WHERE id = ?", (message_id,))

    def nack(self, message_id: int, error: str) -> bool:
        """Give the message back for another attempt; dead-letter it after `max_attempts`.

        Returns True if the message was dead-lettered.
        """
        with self._db.write() as conn:
            row = conn.execute("SELECT data, attributes, attempts FROM queue WHERE id = ?", (message_id,)).fetchone()
            if row is None:
                return False
            if row[2] >= self.max_attempts:
                _dead_letter(conn, row[0], row[1], row[2], error)
                _release_claims(conn, row[0])
                conn.execute("DELETE FROM queue WHERE id = ?", (message_id,))
                return True
            # Back off a little, as Pub/Sub does, so a failing message does not spin.
            conn.execute("UPDATE queue SET leased_until = ? WHERE id = ?", (time.time() + 0.2, message_id))
            return False

    def dead_letter(self, data: bytes, attributes: dict[str, str]) -> str:
        """Put a message straight into the dead letters (`attributes["reason"]` says why)."""
        with self._db.write() as conn:
            return str(_dead_letter(conn, data, orjson.dumps(attributes).decode(), 0, attributes.get("reason", "")))

    def depth(self) -> int:
        return self._db.connect().execute("SELECT COUNT(*) FROM queue").fetchone()[0]

    def dead_letters(self) -> list[tuple[int, str]]:
        return self._db.connect().execute("SELECT id, last_error FROM dead_letter ORDER BY id").fetchall()

    def release_leases(self) -> tuple[int, int]:
        """Hand back every leased message at once; for the queue's only worker, at its start.

        Only `meterline serve` (or the demo) drains a data dir's queue, and only while it holds
        the data dir's lock (`meterline.local.datadir`). So when one starts, every lease in the
        queue belongs to a worker that died (a `kill -9`, a power cut): its messages are taken
        again at once instead of after their lease. A message's attempts are kept, so one that
        kills the worker every time is dead-lettered after `max_attempts` starts instead of
        crash-looping the server. Returns (released, dead-lettered).
        """
        reason = f"the worker stopped while processing it, {self.max_attempts} times"
        with self._db.write() as conn:
            doomed = conn.execute(
                "SELECT id, data, attributes, attempts FROM queue WHERE leased_until > 0 AND attempts >= ?",
                (self.max_attempts,),
            ).fetchall()
            for message_id, data, attributes, attempts in doomed:
                _dead_letter(conn, data, attributes, attempts, reason)
                _release_claims(conn, data)
                conn.execute("DELETE FROM queue WHERE id = ?", (message_id,))
            released = conn.execute("UPDATE queue SET leased_until = 0 WHERE leased_until > 0").rowcount
        return released, len(doomed)

    def dead_letter_page(self, limit: int) -> list[DeadLetter]:
        rows = self._db.connect().execute(
            "SELECT id, data, attempts, last_error, dead_at FROM dead_letter ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [
            DeadLetter(str(i), error, attempts or None, int(dead_at * 1_000_000), _event_count(data))
            for i, data, attempts, error, dead_at in rows
        ]

    def replay_dead_letters(self, ids: Sequence[int] | None = None) -> list[int]:
        """Move dead letters back into the queue with their attempts reset: in ONE transaction,
        so a message is either still a dead letter or queued again, never both. Running the
        same replay twice finds nothing the second time and queues nothing.

        The message is published anew (`published_at` now): its new attempts start from zero.
        """
        now = time.time()
        with self._db.write() as conn:
            if ids is None:
                rows = conn.execute("SELECT id, data, attributes FROM dead_letter ORDER BY id").fetchall()
            else:
                rows = [
                    row
                    for i in sorted(set(ids))
                    for row in conn.execute("SELECT id, data, attributes FROM dead_letter WHERE id = ?", (i,))
                ]
            for dead_id, data, attributes in rows:
                conn.execute(
                    "INSERT INTO queue (data, attributes, published_at) VALUES (?, ?, ?)", (data, attributes, now)
                )
                conn.execute("DELETE FROM dead_letter WHERE id = ?", (dead_id,))
        return [row[0] for row in rows]


def _release_claims(conn: sqlite3.Connection, data: bytes) -> None:
    """Make the claims of a message being dead-lettered stale at once (claim times 0).

    Unlike Pub/Sub's policy, this queue knows when it gives up on a message, and that no
    attempt of it is running then (its one worker has just failed it). So a corrected resend
    need not wait `claim_takeover_seconds`: process still checks the warehouse before taking a
    key over (services/process.py, "Stale claims"), since a failed attempt may have inserted.
    A resend or replay of the same payload is SETTLED: the warehouse says whether it is stored.
    """
    try:
        events = decode_message(data)
    except UndecodableMessage:
        return  # it never got as far as a claim
    conn.executemany(
        "UPDATE dedup SET claimed_at = 0, touched_at = 0 WHERE external_subscription_id = ? AND transaction_id = ? "
        "AND payload_hash = ?",
        [(*e.key, e.payload_hash()) for e in events],
    )


def _event_count(data: bytes) -> int | None:
    try:
        return len(decode_message(data))
    except UndecodableMessage:
        return None


def _dead_letter(conn: sqlite3.Connection, data: bytes, attributes: str, attempts: int, error: str) -> int:
    # A dead letter gets its own id: the queue's ids and these must never overwrite each other.
    cur = conn.execute(
        "INSERT INTO dead_letter (data, attributes, attempts, last_error, dead_at) VALUES (?, ?, ?, ?, ?)",
        (data, attributes, attempts, error[:500], time.time()),
    )
    assert cur.lastrowid is not None  # an INSERT always sets it
    return cur.lastrowid


class SqliteDeadLetters:
    """The dead letters: an EventBus for process to put a message aside (GCP: the dead-letter
    topic), and the DeadLetters port to list and replay them (GCP: `adapters.gcp.dead_letters`)."""

    def __init__(self, queue: SqliteQueue):
        self._queue = queue

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        return self._queue.dead_letter(data, attributes)

    def all(self, limit: int = 1000) -> list[DeadLetter]:
        return self._queue.dead_letter_page(limit)

    def replay(self, ids: Sequence[str] | None = None) -> list[str]:
        """Exactly once: see `SqliteQueue.replay_dead_letters`."""
        numeric = None if ids is None else [int(i) for i in ids if i.isdecimal()]
        return [str(i) for i in self._queue.replay_dead_letters(numeric)]
