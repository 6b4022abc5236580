"""ApiKeyStore contract, on SQLite and on the Firestore emulator: keys are stored as hashes,
revoked keys stay listed as revoked and are refused like unknown ones, within the cache time."""

from __future__ import annotations

import sqlite3

import pytest

from meterline.core.errors import Unauthenticated
from meterline.ports import ApiKeyRecord
from meterline.services.auth import ApiKeyAuthenticator, create_api_key, hash_key, revoke_api_keys


def test_a_key_is_stored_as_its_hash_and_found(backend):
    store = backend.api_keys
    key = create_api_key(store, "gateway", 1_700_000_000_000_000)
    record = store.find(hash_key(key))
    assert record is not None and record.name == "gateway" and record.prefix == key[:10]
    assert not record.revoked and record.revoked_at_us is None
    assert key not in repr(list(store.all()))  # only the hash and a prefix are kept


def test_revoke_marks_the_key_once_and_keeps_it_listed(backend):
    store = backend.api_keys
    key = create_api_key(store, "gateway", 1_700_000_000_000_000)
    other = create_api_key(store, "billing", 1_700_000_000_000_001)

    assert store.revoke(hash_key(key), 1_700_000_000_500_000) is True
    assert store.revoke(hash_key(key), 1_700_000_000_900_000) is False  # already revoked: the first time stays
    assert store.revoke("0" * 64, 1_700_000_000_900_000) is False  # unknown

    revoked = store.find(hash_key(key))
    assert revoked is not None and revoked.revoked and revoked.revoked_at_us == 1_700_000_000_500_000
    listed = {r.name: r for r in store.all()}
    assert listed["gateway"].revoked_at_us == 1_700_000_000_500_000
    assert listed["billing"].revoked_at_us is None
    assert not store.find(hash_key(other)).revoked


def test_a_revoked_key_is_refused_like_an_unknown_one_within_the_cache_time(backend):
    store = backend.api_keys
    key = create_api_key(store, "gateway", 1)
    now = [1000.0]  # the authenticator's monotonic clock, moved by hand
    auth = ApiKeyAuthenticator(store, cache_seconds=1.0, clock=lambda: now[0])
    assert auth.authenticate(f"Bearer {key}").name == "gateway"  # now cached for 1 s

    revoked, already = revoke_api_keys(store, 2, prefix=key[:10] + "…")  # as `api-keys list` prints it
    assert [r.name for r in revoked] == ["gateway"] and already == []

    now[0] += 0.5
    assert auth.authenticate(f"Bearer {key}").name == "gateway"  # the cache's bound, documented
    now[0] += 0.6
    with pytest.raises(Unauthenticated):
        auth.authenticate(f"Bearer {key}")
    with pytest.raises(Unauthenticated):  # a function that never saw the key refuses it at once
        ApiKeyAuthenticator(store, cache_seconds=60).authenticate(f"Bearer {key}")


def test_revoke_by_name_revokes_every_key_of_that_name(backend):
    store = backend.api_keys
    first = create_api_key(store, "gateway", 1)
    second = create_api_key(store, "gateway", 2)
    kept = create_api_key(store, "billing", 3)

    revoked, already = revoke_api_keys(store, 10, name="gateway")
    assert sorted(r.prefix for r in revoked) == sorted([first[:10], second[:10]]) and already == []
    revoked, already = revoke_api_keys(store, 11, name="gateway")  # idempotent
    assert revoked == [] and len(already) == 2
    assert revoke_api_keys(store, 12, name="nobody") == ([], [])
    auth = ApiKeyAuthenticator(store)
    assert auth.authenticate(f"Bearer {kept}").name == "billing"
    for key in (first, second):
        with pytest.raises(Unauthenticated):
            auth.authenticate(f"Bearer {key}")


def test_an_existing_data_dir_without_the_revocation_column_opens_and_can_revoke(tmp_path):
    """The SQLite schema only grows: a data dir written before revocation existed still works."""
    from meterline.adapters.embedded.sqlite import SqliteDatabase
    from meterline.adapters.embedded.sqlite_keys import SqliteApiKeyStore

    path = tmp_path / "meterline.sqlite"
    old = sqlite3.connect(path)
    old.execute(  # the api_keys table as it was first released
        "CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, name TEXT NOT NULL, prefix TEXT NOT NULL, "
        "created_at_us INTEGER NOT NULL)"
    )
    old.execute("INSERT INTO api_keys VALUES (?, 'legacy', 'ml_legacy', 5)", (hash_key("ml_legacy-key"),))
    old.commit()
    old.close()

    store = SqliteApiKeyStore(SqliteDatabase(path))
    assert store.find(hash_key("ml_legacy-key")) == ApiKeyRecord(hash_key("ml_legacy-key"), "legacy", "ml_legacy", 5)
    assert store.revoke(hash_key("ml_legacy-key"), 9) is True
    SqliteDatabase(path)  # opening it again adds nothing twice
    assert [r.revoked_at_us for r in SqliteApiKeyStore(SqliteDatabase(path)).all()] == [9]
