"""The contract suites run the same tests on every backend (tests/harness/backends.py): `embedded`
on SQLite and DuckDB files, `gcp` on the real emulators and bqemulator."""

from __future__ import annotations

import uuid

import pytest

from meterline.ports import Warehouse
from tests.harness.backends import Backend, embedded_backend, gcp_backend


@pytest.fixture(params=["embedded", pytest.param("gcp", marks=pytest.mark.servers)])
def backend(request, tmp_path, monkeypatch) -> Backend:
    if request.param == "embedded":
        return embedded_backend(tmp_path)
    return gcp_backend(request, monkeypatch)


@pytest.fixture(params=["duckdb", pytest.param("bigquery", marks=pytest.mark.servers)])
def warehouse(request, tmp_path) -> Warehouse:
    """A fresh warehouse: DuckDB in a file, or a dataset of its own on bqemulator."""
    if request.param == "duckdb":
        from meterline.adapters.embedded.duckdb_warehouse import DuckDbWarehouse

        return DuckDbWarehouse(tmp_path / "w.duckdb")

    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from meterline.adapters.gcp.bigquery_warehouse import BigQueryWarehouse

    emulator = request.getfixturevalue("bigquery_emulator")
    client = bigquery.Client(
        project="test", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=emulator.url)
    )
    bq = BigQueryWarehouse(client, "test", f"ds_{uuid.uuid4().hex[:8]}")  # a dataset per test: its reset
    bq.ensure_schema()
    return bq
