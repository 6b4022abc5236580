"""The ports: small interfaces between the pure core and the outside world.

Each port has a Google Cloud adapter (`meterline.adapters.gcp`) and an embedded one
(`meterline.adapters.embedded`), and `tests/contract` runs one suite against both.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from meterline.core.events import Event


class PublishFailed(Exception):
    """The bus did not confirm a publish. Nothing may be answered 200 after this."""


class EventBus(Protocol):
    """Carries accepted requests from ingest to process (Pub/Sub, or a SQLite queue)."""

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        """Publish one message and block until the bus confirms it; returns its id.

        Raises `PublishFailed` if the publish is not confirmed.
        """
        ...


class Claim(enum.Enum):
    """What the dedup store says about an event's key."""

    NEW = "new"  # first sighting: claimed as pending, to be inserted
    RETRY = "retry"  # pending with the same payload: an earlier attempt may have crashed; insert again
    DUPLICATE = "duplicate"  # done with the same payload: already counted, drop
    CONFLICT = "conflict"  # the key is taken by another payload: the first one wins; reject this one


class DedupStore(Protocol):
    """Remembers every (subscription, transaction) key and its payload hash."""

    def claim(self, events: Sequence[Event]) -> list[Claim]:
        """In ONE transaction, claim each event's key (events have distinct keys).

        Absent keys are written as pending with the event's payload hash.
        """
        ...

    def mark_done(self, events: Sequence[Event]) -> None:
        """Record that these events' rows are in the warehouse (idempotent)."""
        ...


@dataclass(frozen=True)
class Rejection:
    event: Event
    reason: str


class Warehouse(Protocol):
    """The events table and its deduplicated view (BigQuery, or DuckDB)."""

    def insert_events(self, events: Sequence[Event], processed_at_us: int) -> None:
        """Append rows with the dedup key as insertId. Raises if any row was not written."""
        ...

    def insert_rejected(self, rejections: Sequence[Rejection], rejected_at_us: int) -> None: ...

    def get_event(self, external_subscription_id: str, transaction_id: str) -> Event | None:
        """One event from `events_deduped`."""
        ...

    def list_events(self, external_subscription_id: str, limit: int, offset: int) -> tuple[list[Event], int]:
        """A page of events from `events_deduped`, newest first, and the total count."""
        ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run SQL written in BigQuery's dialect (transpiled where the engine differs)."""
        ...


@dataclass(frozen=True)
class ApiKeyRecord:
    key_hash: str
    name: str
    prefix: str
    created_at_us: int


class ApiKeyStore(Protocol):
    """API keys, stored only as hashes."""

    def add(self, record: ApiKeyRecord) -> None: ...

    def find(self, key_hash: str) -> ApiKeyRecord | None: ...

    def all(self) -> Iterable[ApiKeyRecord]: ...
