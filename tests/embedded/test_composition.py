"""Each function composes only what it uses (so its service account can be least-privilege
and its cold start stays small), and the CLI opens only what its command needs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
from bench_coldstart import measure

# function -> the Google SDKs its runtime may load (and, by omission, the ones it must not).
EXPECTED_SDKS = {
    "ingest": {"pubsub_v1", "firestore", "firestore_v1"},  # the bus; API keys and catalog in Firestore
    "process": {"firestore", "firestore_v1", "bigquery"},  # dedup claims; the events table
    "admin": {"firestore", "firestore_v1"},  # the catalog and the API keys
    "bill": {"firestore", "firestore_v1", "bigquery"},  # catalog and invoices; usage and finance tables
    "stripe_webhook": {"firestore", "firestore_v1", "bigquery"},  # invoices, event ids; the payments table
    "portal": {"firestore", "firestore_v1", "bigquery"},  # keys, catalog, invoices; usage
}


@pytest.mark.parametrize("function", sorted(EXPECTED_SDKS))
def test_a_function_builds_only_the_clients_it_uses(function):
    _, _, sdks = measure(function, REPO_ROOT / "shared", REPO_ROOT / "functions")
    assert set(sdks.split(",")) == EXPECTED_SDKS[function]


def test_api_keys_create_on_gcp_needs_only_firestore(firestore_emulator, unique_project):
    # Before: the CLI built every client and died with a DefaultCredentialsError traceback from
    # the Pub/Sub client it never used, when only FIRESTORE_EMULATOR_HOST was set.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    env.update(firestore_emulator.env, METERLINE_BACKEND="gcp", GOOGLE_CLOUD_PROJECT=unique_project,
               GOOGLE_APPLICATION_CREDENTIALS="/nonexistent")
    created = subprocess.run([sys.executable, "-m", "meterline", "api-keys", "create", "--name", "gateway"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("ml_") and "Traceback" not in created.stderr
    listed = subprocess.run([sys.executable, "-m", "meterline", "api-keys", "list", "--format", "csv"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0 and "gateway" in listed.stdout
