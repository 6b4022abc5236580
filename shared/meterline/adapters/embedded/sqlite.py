"""SQLite adapters: the event queue (Pub/Sub's stand-in), the dedup store and the API keys.

One file, WAL mode, one connection per thread. A write is committed before the call returns,
so a confirmed publish survives a crash of the process (WAL with synchronous=NORMAL may lose
the last commits on power loss, not on a crash; use the gcp backend for production).
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
from meterline.ports import ApiKeyRecord, Claim, PublishFailed

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
  state TEXT NOT NULL,
  claimed_at REAL NOT NULL,
  PRIMARY KEY (external_subscription_id, transaction_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (
  key_hash TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  prefix TEXT NOT NULL,
  created_at_us INTEGER NOT NULL
);
"""


class SqliteDatabase:
    """A SQLite file shared by the embedded adapters; one connection per thread."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self.connect() as conn:
            conn.executescript(_SCHEMA)

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
                "RETURNING id, data, attempts",
                (now + lease_seconds, now, max_messages),
            ).fetchall()
        return sorted((QueuedMessage(r[0], r[1], r[2]) for r in rows), key=lambda m: m.id)

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


def _dead_letter(conn: sqlite3.Connection, data: bytes, attributes: str, attempts: int, error: str) -> int:
    # A dead letter gets its own id: the queue's ids and these must never overwrite each other.
    cur = conn.execute(
        "INSERT INTO dead_letter (data, attributes, attempts, last_error, dead_at) VALUES (?, ?, ?, ?, ?)",
        (data, attributes, attempts, error[:500], time.time()),
    )
    return int(cur.lastrowid)


class SqliteDeadLetters:
    """The dead letters as an EventBus (GCP: the dead-letter topic)."""

    def __init__(self, queue: SqliteQueue):
        self._queue = queue

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        return self._queue.dead_letter(data, attributes)


class SqliteDedupStore:
    def __init__(self, db: SqliteDatabase):
        self._db = db

    def claim(self, events: Sequence[Event]) -> list[Claim]:
        claims: list[Claim] = []
        now = time.time()
        with self._db.write() as conn:
            for event in events:
                digest = event.payload_hash()
                row = conn.execute(
                    "SELECT payload_hash, state FROM dedup WHERE external_subscription_id = ? AND transaction_id = ?",
                    event.key,
                ).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO dedup VALUES (?, ?, ?, 'pending', ?)",
                        (*event.key, digest, now),
                    )
                    claims.append(Claim.NEW)
                elif row[0] != digest:
                    claims.append(Claim.CONFLICT)
                elif row[1] == "done":
                    claims.append(Claim.DUPLICATE)
                else:
                    claims.append(Claim.RETRY)
        return claims

    def mark_done(self, events: Sequence[Event]) -> None:
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE dedup SET state = 'done' WHERE external_subscription_id = ? AND transaction_id = ?",
                [e.key for e in events],
            )


class SqliteApiKeyStore:
    def __init__(self, db: SqliteDatabase):
        self._db = db

    def add(self, record: ApiKeyRecord) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?)",
                (record.key_hash, record.name, record.prefix, record.created_at_us),
            )

    def find(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._db.connect().execute("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return ApiKeyRecord(*row) if row else None

    def all(self) -> list[ApiKeyRecord]:
        return [ApiKeyRecord(*r) for r in self._db.connect().execute("SELECT * FROM api_keys ORDER BY created_at_us")]
