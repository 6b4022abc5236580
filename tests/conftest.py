"""Shared pytest fixtures for Meterline.

Sections: (1) import paths, (2) real local servers, (3) per-test isolation.
Add new fixtures under the section they belong to, or in a new section.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------
# 1. Import paths: the repo root, so that `import infra.servers` works.
# ---------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from infra import servers  # noqa: E402

# ---------------------------------------------------------------------------
# 2. Real local servers (see infra/servers.py). Session-scoped: each one starts
#    on first use by a test that requests it and stops at session end. A server
#    that cannot start FAILS the test (never skips): these servers are part of
#    every developer's and CI's machine. Tests that use one are marked
#    `servers` automatically, so `pytest -m "not servers"` leaves them out.
# ---------------------------------------------------------------------------

SERVER_FIXTURES = frozenset({"pubsub_emulator", "firestore_emulator", "bigquery_emulator", "stripe_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


def _serve(start) -> Iterator[servers.LocalServer]:
    failure = None
    try:
        server = start()
    except (servers.ServerUnavailable, servers.ServerStartError) as err:
        failure = str(err)
    if failure is not None:  # raised outside the except block: no chained traceback
        pytest.fail(failure, pytrace=False)
    with server:
        yield server


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[servers.LocalServer]:
    """Pub/Sub emulator; `.env` = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:P"}. It has no reset: use `unique_project`."""
    yield from _serve(servers.start_pubsub_emulator)


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[servers.FirestoreEmulator]:
    """Firestore emulator; `.env` = {"FIRESTORE_EMULATOR_HOST": ...}; `.reset(project)` deletes all documents."""
    yield from _serve(servers.start_firestore_emulator)


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[servers.BigQueryEmulator]:
    """bqemulator; `.url` is the client's api_endpoint, project "test"; `.env` = {"BIGQUERY_EMULATOR_HOST": url}."""
    yield from _serve(servers.start_bigquery_emulator)


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[servers.StripeServer]:
    """localstripe; `.url` is StripeClient's base_addresses["api"]; `.reset()` forgets every object."""
    yield from _serve(servers.start_stripe_server)


# ---------------------------------------------------------------------------
# 3. Per-test isolation.
# ---------------------------------------------------------------------------


@pytest.fixture
def unique_project() -> str:
    """A fresh GCP project id for this test (the emulators keep state per project)."""
    return f"test-{uuid.uuid4().hex[:8]}"
