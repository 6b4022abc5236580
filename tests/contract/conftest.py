"""The contract suites run the same tests on every backend (tests/harness/backends.py): `embedded`
on SQLite and DuckDB files, `gcp` on the real emulators and bqemulator."""

from __future__ import annotations

import pytest

from tests.harness.backends import Backend, embedded_backend, gcp_backend


@pytest.fixture(params=["embedded", pytest.param("gcp", marks=pytest.mark.servers)])
def backend(request, tmp_path, monkeypatch) -> Backend:
    if request.param == "embedded":
        return embedded_backend(tmp_path)
    return gcp_backend(request, monkeypatch)
