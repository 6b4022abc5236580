"""The process service: count each event exactly once.

For one message (one ingest request, up to 100 events) it runs three steps. What a crash at
each step costs, given that an unacknowledged message is always delivered again:

  1. claim   One dedup-store transaction claims every new key with its payload hash.
             Crash before it commits: nothing was written; redelivery starts over. No cost.
  2. insert  The claimed events are streamed into the warehouse with insertId = the key.
             Crash before the insert: the claims are fresh; redelivery sees RETRY and inserts
             them. No cost.
  3. reject  Events that reuse a key with another payload go to `rejected_events`.
             Crash here, or after it before the ack: redelivery sees RETRY and inserts the
             rows again. Cost: duplicate rows, which insertId or `events_deduped` removes.

So the worst a crash costs is a duplicate row that the view removes, never a lost event.

Why no "done" mark. A claim used to be marked done after the insert, so that a redelivery
wrote nothing; that was a second dedup-store write per event, the largest cost of the whole
system on GCP (docs/cost.md). Without it, a redelivery or resend of the same payload within
`claim_takeover_seconds` of the claim inserts again (RETRY): a copy, removed by the view. Past
that window no attempt of the first claim can still be running (a Cloud Run function's event
timeout is at most 9 min; the embedded worker's lease 60 s), so the store says SETTLED and the
warehouse decides: a row exists -> DUPLICATE, nothing written; none -> the key is claimed
anew and inserted. Every copy of a key in `events` was therefore inserted within the window
plus one attempt of its claim, which bounds how far apart the copies' server-filled
timestamps can be (`adapters.sql.usage.DEDUP_SLACK_US`).

Stale claims. A message can be dead-lettered after its claims were written: its keys stay
claimed with the first payload's hash. A resend of the SAME payload is RETRY or SETTLED, as
above (so is a replay of the dead letter). A CORRECTED resend (same key, another payload) is
a CONFLICT while an attempt may be alive, but the first payload may never have been counted,
and only the warehouse can tell:
  (a) the first payload was never inserted: the corrected resend must win;
  (b) it was inserted: the first payload is counted, and the resend is a true conflict.
The rule: a claim with another payload is STALE when no attempt has touched it for
`claim_takeover_seconds` (every attempt refreshes its claims, even a RETRY). For a STALE
claim, process looks the key up in the warehouse: if the key has a row, it is (b) and the
resend is rejected as a conflict; if not, it is (a), and the resend takes the key over, in a
second claim transaction that checks again that nobody touched the claim meanwhile. So the
first payload's message, replayed later, is the one rejected, and the warehouse never holds
two payloads for one key (the invariant `events_deduped` relies on). The rule needs no signal
from the bus, which matters on GCP: Pub/Sub's dead-letter policy tells nobody when it moves
a message. The embedded queue does know, and makes a dead-lettered message's claims stale at
once (`adapters.embedded.sqlite_queue._release_claims`), so there a corrected resend wins without
waiting. The warehouse lookup is one query per message, paid only for keys claimed longer
ago than the window: resends and replays, not the normal flow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from meterline import logs
from meterline.core.clock import now_us
from meterline.core.events import Event
from meterline.core.messages import UndecodableMessage, decode_message
from meterline.ports import Claim, DedupStore, EventStore, Rejection

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
    def __init__(self, dedup: DedupStore, events: EventStore, claim_takeover_seconds: float = CLAIM_TAKEOVER_SECONDS):
        self._dedup = dedup
        self._events = events
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
        # Step 2: insert. A crash before it leaves fresh claims; redelivery inserts (RETRY).
        if to_insert:
            self._events.insert_events(to_insert, now)
        # Step 3: reject. A crash here or later costs a copy on redelivery, removed by the view.
        if rejections:
            self._events.insert_rejected(rejections, now)

        # Logged by the caller, which knows the message id and when it was published.
        return ProcessResult(len(to_insert), duplicates, len(rejections), rejections)

    def _claim(self, events: Sequence[Event]) -> list[Claim]:
        """Claim the keys; the warehouse settles what the claims alone cannot (the module
        docstring says why): a SETTLED key with a row is a DUPLICATE, a STALE one a CONFLICT;
        without a row either is claimed again for this event."""
        claims = self._dedup.claim(events, stale_after_s=self._takeover_after)
        unsure = [e for e, c in zip(events, claims, strict=True) if c in (Claim.SETTLED, Claim.STALE)]
        if not unsure:
            return claims
        # A crash after the lookup costs nothing: the claims are unchanged until the next step.
        stored = self._events.stored_keys([e.key for e in unsure])
        free = [e for e in unsure if e.key not in stored]
        # Re-checked in one transaction: an attempt that touched a claim since makes it a CONFLICT.
        again = self._dedup.claim(free, stale_after_s=self._takeover_after, take_over=True) if free else []
        retaken = {e.key: c for e, c in zip(free, again, strict=True)}
        stale = sum(c is Claim.STALE for c in claims)
        if stale:
            logs.event(
                _log, "stale claims: taken over where the first payload was never stored", logging.WARNING,
                stale=stale, taken_over=sum(c is Claim.NEW for c in again),
            )
        settled = {Claim.SETTLED: Claim.DUPLICATE, Claim.STALE: Claim.CONFLICT}
        return [
            (settled[c] if e.key in stored else retaken[e.key]) if c in settled else c
            for e, c in zip(events, claims, strict=True)
        ]
