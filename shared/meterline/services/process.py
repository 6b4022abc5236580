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

Stale claims. A message can be dead-lettered after its claims were written: its keys then
stay `pending` with the first payload's hash. A resend of the SAME payload sees RETRY and is
inserted (so does a replay of the dead letter). A CORRECTED resend (same key, another
payload) would be a CONFLICT forever, although the first payload may never have been
counted. But `pending` means one of two things, and only the warehouse can tell which:
  (a) the first payload was never inserted: the corrected resend must win;
  (b) it was inserted and the attempt died before `mark_done` (or before the ack): the first
      payload is counted, and the resend is a true conflict.
The rule: a claim with another payload is STALE when no attempt has touched it for
`claim_takeover_seconds` (15 min; every attempt refreshes its claims, even a RETRY), longer
than any attempt can run between its claim and its insert (a Cloud Run function's event
timeout is at most 9 min; the embedded worker's lease 60 s). For a STALE claim, process
looks the key up in the warehouse: if the key has a row, it is (b) and the resend is
rejected as a conflict; if not, it is (a), and the resend takes the key over, in a second
claim transaction that checks again that nobody touched the claim meanwhile. So the first
payload's message, replayed later, is the one rejected, and the warehouse never holds two
payloads for one key (the invariant `events_deduped` relies on). The rule needs no signal
from the bus, which matters on GCP: Pub/Sub's dead-letter policy tells nobody when it moves
a message. The embedded queue does know, and makes a dead-lettered message's claims stale at
once (`adapters.embedded.sqlite._release_claims`), so there a corrected resend wins without
waiting. The warehouse lookup costs one read per stale key, paid only after a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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


CLAIM_TAKEOVER_SECONDS = 900.0  # the default of `Settings.claim_takeover_seconds`


class ProcessService:
    def __init__(self, dedup: DedupStore, warehouse: Warehouse, claim_takeover_seconds: float = CLAIM_TAKEOVER_SECONDS):
        self._dedup = dedup
        self._warehouse = warehouse
        self._takeover_after = claim_takeover_seconds

    def handle_message(self, data: bytes) -> ProcessResult:
        try:
            events = decode_message(data)
        except UndecodableMessage as exc:
            raise PoisonMessage(f"undecodable message: {exc}") from None
        return self.handle_events(events)

    def handle_events(self, events: Sequence[Event]) -> ProcessResult:
        unique, duplicates, rejections = split_in_message_duplicates(events)

        # Step 1: claim. A crash before this commits costs nothing.
        claims = self._claim(unique)
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

        # Logged by the caller, which knows the message id and when it was published.
        return ProcessResult(len(to_insert), duplicates, len(rejections), rejections)

    def _claim(self, events: Sequence[Event]) -> list[Claim]:
        """Claim the keys; a STALE claim is taken over if its key has no row in the warehouse,
        and is a CONFLICT otherwise (the module docstring, "Stale claims", says why)."""
        claims = self._dedup.claim(events, stale_after_s=self._takeover_after)
        stale = [e for e, c in zip(events, claims, strict=True) if c is Claim.STALE]
        if not stale:
            return claims
        # The first payload never reached the warehouse: this one may take the key over. A
        # crash after the lookup costs nothing: the claims are unchanged until the next step.
        free = [e for e in stale if self._warehouse.get_event(*e.key) is None]
        # Re-checked in one transaction: an attempt that touched a claim since makes it a CONFLICT.
        again = self._dedup.claim(free, stale_after_s=self._takeover_after, take_over=True)
        retaken = {e.key: c for e, c in zip(free, again, strict=True)}
        logs.event(
            _log, "stale claims: taken over where the first payload was never stored", logging.WARNING,
            stale=len(stale), taken_over=sum(c is Claim.NEW for c in again),
        )
        return [retaken.get(e.key, Claim.CONFLICT) if c is Claim.STALE else c for e, c in zip(events, claims, strict=True)]


def log_processed(logger: logging.Logger, result: ProcessResult, message_id: Any, published_us: int | None,
                  started_us: int) -> None:
    """The one INFO line per processed message, for its entry point (the Pub/Sub function, the
    embedded worker): counts, the delay since publish and the time it took; no payload."""
    done = now_us()
    logs.event(
        logger, "message processed", logging.INFO, message_id=message_id,
        inserted=result.inserted, duplicates=result.duplicates, rejected=result.rejected,
        delay_ms=None if published_us is None else (done - published_us) // 1000,
        duration_ms=(done - started_us) // 1000,
    )
