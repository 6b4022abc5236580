"""DedupStore on Firestore: one document per (subscription, transaction) key.

A message's keys are claimed in ONE transaction (at most 100 events, under Firestore's 500
writes per transaction). Under contention Firestore retries the transaction, so two
deliveries of the same key can never both see it absent.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from meterline.core.events import Event
from meterline.ports import Claim

COLLECTION = "meterline_dedup"
# Firestore's TTL policy (terraform/firestore.tf) deletes keys after this long; an event
# redelivered later than that would be counted again, so it is far beyond Pub/Sub's 7 days.
RETENTION = timedelta(days=400)


def doc_id(event: Event) -> str:
    # Ids may hold any bytes; a hash keeps document ids short, valid and evenly spread.
    return hashlib.sha256(event.key_text.encode()).hexdigest()


class FirestoreDedupStore:
    def __init__(self, client, collection: str = COLLECTION):
        self._client = client
        self._collection = client.collection(collection)

    def claim(
        self, events: Sequence[Event], *, stale_after_s: float = float("inf"), take_over: bool = False
    ) -> list[Claim]:
        """See `ports.DedupStore.claim`. Claim times are this client's clock; the staleness
        window (minutes) is far wider than any skew between function instances."""
        from google.cloud import firestore

        if not events:
            return []
        refs = [self._collection.document(doc_id(e)) for e in events]
        hashes = [e.payload_hash() for e in events]

        @firestore.transactional
        def claim_all(transaction) -> list[Claim]:
            found = {snap.id: snap for snap in self._client.get_all(refs, transaction=transaction)}
            now = datetime.now(timezone.utc)
            claims = []
            for event, ref, digest in zip(events, refs, hashes, strict=True):
                snap = found.get(ref.id)
                if snap is None or not snap.exists:
                    transaction.create(
                        ref,
                        {
                            "external_subscription_id": event.external_subscription_id,
                            "transaction_id": event.transaction_id,
                            "payload_hash": digest,
                            "state": "pending",
                            "claimed_at": now,
                            "expire_at": now + RETENTION,
                        },
                    )
                    claims.append(Claim.NEW)
                    continue
                data = snap.to_dict()
                if data["state"] == "done":
                    claims.append(Claim.DUPLICATE if data["payload_hash"] == digest else Claim.CONFLICT)
                elif data["payload_hash"] == digest:
                    # An attempt is alive: refresh the claim, so no other payload can take it over.
                    transaction.update(ref, {"claimed_at": now})
                    claims.append(Claim.RETRY)
                elif (now - data["claimed_at"]).total_seconds() < stale_after_s:
                    claims.append(Claim.CONFLICT)
                elif take_over:
                    transaction.update(ref, {"payload_hash": digest, "claimed_at": now, "expire_at": now + RETENTION})
                    claims.append(Claim.NEW)
                else:
                    claims.append(Claim.STALE)
            return claims

        return claim_all(self._client.transaction(max_attempts=10))

    def mark_done(self, events: Sequence[Event]) -> None:
        # Not transactional: "done" only ever follows "pending" for the same hash, and writing it
        # twice is harmless. A batch write is atomic, and 100 updates fit in one.
        batch = self._client.batch()
        for event in events:
            batch.update(self._collection.document(doc_id(event)), {"state": "done", "done_at": time.time()})
        batch.commit()
