"""DedupStore on Firestore: one document per (subscription, transaction) key.

Cost decides the shape: this is the one Firestore operation paid per event (docs/cost.md).
A new key costs ONE write and no read: a message's keys are created in one transaction
that holds only `create`s, which Firestore refuses as a whole if any key exists (at most
100 events, under its 500 writes per transaction). Only then, for a redelivery or a resend,
are the keys read and decided one by one, in a read-write transaction; under contention
Firestore retries it, so two deliveries of one key can never both see it absent.

A claim is never marked "done" (that was a second write per event): whether its event was
stored is the warehouse's to say (`services/process.py`). The document holds the payload's
hash and two times; the key itself is only in the document id (a hash of it), which is how
every read finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from meterline.adapters.gcp.ids import doc_id
from meterline.core.events import Event
from meterline.ports import Claim

COLLECTION = "meterline_dedup"
# NOTE: the default of `Settings.dedup_retention_days`. Firestore's TTL policy
# (terraform/firestore.tf) deletes a claim this long after it was written. It must outlive
# every way a message can come back: Pub/Sub keeps an unacknowledged message at most 31 days
# (7 as deployed), its dead letter 7 more before replay, a gateway retries for hours. A resend
# later than that is stored again; if it carries its own timestamp the usage query still
# counts it once (both copies fall in one period's scan), otherwise it counts as a new event.
RETENTION = timedelta(days=35)


class FirestoreDedupStore:
    def __init__(self, client, collection: str = COLLECTION, retention: timedelta = RETENTION):
        self._client = client
        self._collection = client.collection(collection)
        self._retention = retention

    def claim(
        self, events: Sequence[Event], *, stale_after_s: float = float("inf"), take_over: bool = False
    ) -> list[Claim]:
        """See `ports.DedupStore.claim`. Claim times are this client's clock; the windows
        (minutes) are far wider than any skew between function instances."""
        if not events:
            return []
        refs = [self._collection.document(doc_id(e.key_text)) for e in events]
        hashes = [e.payload_hash() for e in events]
        if not take_over and self._create_all(refs, hashes):
            return [Claim.NEW] * len(events)
        return self._decide(refs, hashes, stale_after_s, take_over)

    def _claim_doc(self, digest: str, now: datetime) -> dict:
        return {"payload_hash": digest, "claimed_at": now, "touched_at": now, "expire_at": now + self._retention}

    def _create_all(self, refs, hashes) -> bool:
        """Every key new: created, one write each. Any key present: nothing written, False."""
        from google.api_core.exceptions import AlreadyExists, Conflict
        from google.cloud import firestore

        @firestore.transactional
        def create_all(transaction) -> None:
            now = datetime.now(UTC)
            for ref, digest in zip(refs, hashes, strict=True):
                transaction.create(ref, self._claim_doc(digest, now))

        try:
            create_all(self._client.transaction(max_attempts=10))
        except (AlreadyExists, Conflict):
            return False
        return True

    def _decide(self, refs, hashes, stale_after_s: float, take_over: bool) -> list[Claim]:
        from google.cloud import firestore

        @firestore.transactional
        def decide(transaction) -> list[Claim]:
            found = {snap.id: snap for snap in self._client.get_all(refs, transaction=transaction)}
            now = datetime.now(UTC)
            claims = []
            for ref, digest in zip(refs, hashes, strict=True):
                snap = found.get(ref.id)
                if snap is None or not snap.exists:
                    transaction.create(ref, self._claim_doc(digest, now))
                    claims.append(Claim.NEW)
                    continue
                data = snap.to_dict()
                if data["payload_hash"] == digest:
                    if (now - data["claimed_at"]).total_seconds() < stale_after_s:
                        # An attempt may be alive: refresh the claim, so no other payload takes it over.
                        transaction.update(ref, {"touched_at": now})
                        claims.append(Claim.RETRY)
                    elif take_over:
                        # The warehouse has no row of it: a claim anew, for this attempt.
                        transaction.update(ref, {"claimed_at": now, "touched_at": now})
                        claims.append(Claim.RETRY)
                    else:
                        claims.append(Claim.SETTLED)
                elif (now - data["touched_at"]).total_seconds() < stale_after_s:
                    claims.append(Claim.CONFLICT)
                elif take_over:
                    transaction.set(ref, self._claim_doc(digest, now))
                    claims.append(Claim.NEW)
                else:
                    claims.append(Claim.STALE)
            return claims

        return decide(self._client.transaction(max_attempts=10))
