"""SQLite adapters: the event queue (Pub/Sub's stand-in) and its dead letters, the dedup
store and the API keys.

One file, WAL mode, one connection per thread. A write is committed before the call returns,
so a confirmed publish survives a crash of the process (WAL with synchronous=NORMAL may lose
the last commits on power loss, not on a crash; use the gcp backend for production).

The schema only grows: tables are created if absent and columns added if missing
(`_ADDED_COLUMNS`), so a data dir written by an older version opens as it is.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from meterline.core.events import Event
from meterline.core.messages import UndecodableMessage, decode_message
from meterline.ports import ApiKeyRecord, Claim, DeadLetter, PublishFailed

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  data BLOB NOT NULL,
  attributes TEXT NOT NULL,
  published_at REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  leased_until REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letter (
  id INTEGER PRIMARY KEY,
  data BLOB NOT NULL,
  attributes TEXT NOT NULL,
  attempts INTEGER NOT NULL,
  last_error TEXT NOT NULL,
  dead_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dedup (
  external_subscription_id TEXT NOT NULL,
  transaction_id TEXT NOT NULL,
  payload_hash TEXT NOT NULL,
  state TEXT NOT NULL,  -- unused since claims are no longer marked done; kept for old data dirs
  claimed_at REAL NOT NULL,
  touched_at REAL,
  PRIMARY KEY (external_subscription_id, transaction_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
  key_hash TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  prefix TEXT NOT NULL,
  created_at_us INTEGER NOT NULL
);
"""

# Columns added after a table was first released: (table, column, declaration). Each is added
# to an existing data dir on open, if missing.
_ADDED_COLUMNS = (("api_keys", "revoked_at_us", "INTEGER"), ("dedup", "touched_at", "REAL"))


class SqliteDatabase:
    """A SQLite file shared by the embedded adapters; one connection per thread."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self.connect() as conn:
            conn.executescript(_SCHEMA)
        # Under the write lock: two processes opening an old data dir at once add each column once.
        with self.write() as conn:
            for table, column, declaration in _ADDED_COLUMNS:
                if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN ourselves, so each write's transaction is explicit.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction: it takes the write lock up front, so read-then-write is atomic."""
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


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
    return int(cur.lastrowid)


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
