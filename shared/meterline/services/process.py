"""The process service: count each event exactly once.

For one message (one ingest request, up to 100 events) it runs four steps. What a crash at
each step costs, given that an unacknowledged message is always delivered again:

  1. claim     One dedup-store transaction claims every key as pending with its payload hash.
               Crash before it commits: nothing was written; redelivery starts over. No cost.
  2. insert    The claimed events are streamed into the warehouse with insertId = the key.
               Crash before the insert: the claims stay pending; redelivery sees RETRY and
               inserts them. No cost.
  3. reject    Events that reuse a key with another payload go to `rejected_events`.
               Crash here: the good rows are in, their claims pending; redelivery inserts them
               again. Cost: duplicate rows, which `events_deduped` removes.
  4. mark done The claims are marked done.
               Crash before it: same as 3. Crash after it but before the ack: redelivery sees
               DUPLICATE for every key and writes nothing. No cost.

So the worst a crash costs is a duplicate row that the view removes, never a lost event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from meterline import logs
from meterline.core.clock import now_us
from meterline.core.events import Event
from meterline.core.messages import UndecodableMessage, decode_message
from meterline.ports import Claim, DedupStore, Rejection, Warehouse

_log = logs.get("process")

REASON_CONFLICT = "transaction_id_reused_with_different_payload"


class PoisonMessage(Exception):
    """A message that can never be processed. Raised so the bus dead-letters it after its retries."""


@dataclass
class ProcessResult:
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def split_in_message_duplicates(events: Sequence[Event]) -> tuple[list[Event], int, list[Rejection]]:
    """Keep the first event of each key within one message.

    A later copy with the same payload is a duplicate; one with another payload is a
    conflict (the first one wins, as across messages).
    """
    first: dict[tuple[str, str], tuple[Event, str]] = {}
    duplicates = 0
    rejections: list[Rejection] = []
    for event in events:
        seen = first.get(event.key)
        if seen is None:
            first[event.key] = (event, event.payload_hash())
        elif seen[1] == event.payload_hash():
            duplicates += 1
        else:
            rejections.append(Rejection(event, REASON_CONFLICT))
    return [e for e, _ in first.values()], duplicates, rejections


class ProcessService:
    def __init__(self, dedup: DedupStore, warehouse: Warehouse):
        self._dedup = dedup
        self._warehouse = warehouse

    def handle_message(self, data: bytes) -> ProcessResult:
        try:
            events = decode_message(data)
        except UndecodableMessage as exc:
            raise PoisonMessage(f"undecodable message: {exc}") from None
        return self.handle_events(events)

    def handle_events(self, events: Sequence[Event]) -> ProcessResult:
        unique, duplicates, rejections = split_in_message_duplicates(events)

        # Step 1: claim. A crash before this commits costs nothing.
        claims = self._dedup.claim(unique)
        to_insert: list[Event] = []
        for event, claim in zip(unique, claims, strict=True):
            if claim in (Claim.NEW, Claim.RETRY):
                to_insert.append(event)
            elif claim is Claim.DUPLICATE:
                duplicates += 1
            else:
                rejections.append(Rejection(event, REASON_CONFLICT))

        now = now_us()
        # Step 2: insert. A crash before it leaves pending claims; redelivery inserts (RETRY).
        if to_insert:
            self._warehouse.insert_events(to_insert, now)
        # Step 3: reject. A crash here costs a duplicate row on redelivery, removed by the view.
        if rejections:
            self._warehouse.insert_rejected(rejections, now)
        # Step 4: mark done. After this, redelivery finds DUPLICATE and writes nothing.
        if to_insert:
            self._dedup.mark_done(to_insert)

        result = ProcessResult(len(to_insert), duplicates, len(rejections), rejections)
        logs.event(_log, "processed", 10, inserted=result.inserted, duplicates=duplicates, rejected=result.rejected)
        return result
