"""The SQLite database the embedded adapters share: one file, its schema, its connections.

One file, WAL mode, one connection per thread. A write is committed before the call returns,
so a confirmed publish survives a crash of the process (WAL with synchronous=NORMAL may lose
the last commits on power loss, not on a crash; use the gcp backend for production).

The tables of the queue and its dead letters (`sqlite_queue`), the dedup claims
(`sqlite_dedup`) and the API keys (`sqlite_keys`) are created here, on open, because they
reach into each other (dead-lettering a message releases its claims); the catalog and the
invoices create their own. The schema only grows: tables are created if absent and columns
added if missing (`_ADDED_COLUMNS`), so a data dir written by an older version opens as it is.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
