"""Fixtures of the Lago compatibility suite: one running Meterline per module and backend
(`targets.py` says how each is started and read)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.targets import Target, gcp_target, serve_target


@pytest.fixture(scope="module", params=["serve", pytest.param("gcp", marks=pytest.mark.servers)])
def target(request, tmp_path_factory) -> Iterator[Target]:
    """One running Meterline per test module and backend; tests use codes of their own."""
    if request.param == "serve":
        with serve_target(tmp_path_factory.mktemp("serve")) as running:
            yield running
    else:
        emulators = [request.getfixturevalue(n) for n in ("pubsub_emulator", "firestore_emulator", "bigquery_emulator")]
        with gcp_target(*emulators) as running:
            yield running


@pytest.fixture
def own_target(target: Target, tmp_path) -> Iterator[Target]:
    """A target this test may stop to read the warehouse: a fresh `meterline serve` (the module's
    keeps serving the other tests), or the functions on the emulators, which need no stop."""
    if target.name != "serve":
        yield target
        return
    with serve_target(tmp_path / "serve") as running:
        yield running


@pytest.fixture
def lago(target: Target):
    """The official Lago client, pointed at the target."""
    return target.client()
