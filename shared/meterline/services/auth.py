"""API keys: issued once, stored only as a SHA-256 hash, verified with a short cache.

A key is 32 random bytes, so a fast hash is enough (there is nothing to brute-force, unlike
a password); the cache keeps the store off the hot path of ingest.

Revocation marks the stored key revoked (it stays listed, as revoked). A revoked key is
refused like an unknown one as soon as a function asks the store about it, that is at once
by a function that has not seen the key lately, and within `api_key_cache_seconds`
(METERLINE_API_KEY_CACHE_SECONDS, 60 s) by one that verified it just before: the cache is
the price of keeping the store off the hot path, and revoking tells the operator that bound.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from meterline.core.errors import Unauthenticated
from meterline.ports import ApiKeyRecord, ApiKeyStore

KEY_PREFIX = "ml_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(store: ApiKeyStore, name: str, now_us: int) -> str:
    """Store a new key's hash and return the key itself, which is never stored or shown again."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    store.add(ApiKeyRecord(key_hash=hash_key(key), name=name, prefix=key[:10], created_at_us=now_us))
    return key


def revoke_api_keys(
    store: ApiKeyStore, now_us: int, *, prefix: str | None = None, name: str | None = None
) -> tuple[list[ApiKeyRecord], list[ApiKeyRecord]]:
    """Revoke every key with this prefix (as `api-keys list` shows it; a trailing "…" is
    ignored) or this name. Returns (revoked now, already revoked before)."""
    if (prefix is None) == (name is None):
        raise ValueError("give a prefix or a name")
    if prefix is not None:
        prefix = prefix.rstrip("…")
    matches = [r for r in store.all() if (r.prefix == prefix if prefix is not None else r.name == name)]
    revoked = [r for r in matches if not r.revoked and store.revoke(r.key_hash, now_us)]
    already = [r for r in matches if r not in revoked]
    return revoked, already


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyAuthenticator:
    """Checks `Authorization: Bearer <key>` against the stored hashes."""

    def __init__(self, store: ApiKeyStore, cache_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._ttl = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}
        self._pinned: dict[str, ApiKeyRecord] = {}
        self._lock = threading.Lock()

    def trust(self, key: str, name: str, now_us: int) -> None:
        """Accept one more key, held in memory only and never stored: `meterline serve`'s
        local token, which dies with the process."""
        digest = hash_key(key)
        self._pinned[digest] = ApiKeyRecord(key_hash=digest, name=name, prefix=key[:10], created_at_us=now_us)

    def authenticate(self, authorization: str | None) -> ApiKeyRecord:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthenticated()
        digest = hash_key(token)
        pinned = self._pinned.get(digest)
        if pinned is not None:
            return pinned
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = self._store.find(digest)
        # compare_digest: the store looked the hash up by value; this keeps the final check constant-time.
        if record is None or record.revoked or not hmac.compare_digest(record.key_hash, digest):
            raise Unauthenticated()  # a revoked key is refused exactly like an unknown one
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, record)
        return record
