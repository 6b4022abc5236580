"""`make package`: each function's zip holds what it imports, is built the same twice, and,
installed into a clean virtualenv the way the platform's build would (tests/packaged.py), serves
a request. tests/e2e/test_packaged_functions.py makes each installed zip do its real work.
"""

from __future__ import annotations

import json
import subprocess
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

from infra import package
from tests import packaged


def test_requirements_are_what_each_function_imports():
    stale = package.refresh_requirements(package.function_names(), check_only=True)
    assert not stale, f"stale functions/*/requirements.txt (run `make package`): {stale}"
    ingest, _ = package.parse_requirements((package.FUNCTIONS_DIR / "ingest" / "requirements.txt").read_text())
    assert {"google-cloud-pubsub", "google-cloud-firestore", "google-cloud-bigquery", "functions-framework"} <= set(ingest)
    assert not {"duckdb", "stripe", "pyyaml"} & set(ingest), "ingest imports neither DuckDB nor Stripe"
    bill, _ = package.parse_requirements((package.FUNCTIONS_DIR / "bill" / "requirements.txt").read_text())
    assert "stripe" in bill and "google-cloud-pubsub" not in bill
    # sqlglot is imported only inside `adapters.sql.literal()`, which every usage query calls
    # and no probe request reaches: the source scan of lazy imports finds it.
    for name in ("bill", "portal"):
        _, imported = package.parse_requirements((package.FUNCTIONS_DIR / name / "requirements.txt").read_text())
        assert "sqlglot" in imported, name


def test_a_lazy_import_on_a_path_the_probe_does_not_take_is_found():
    lazy = package.imported_distributions("bill")
    assert "sqlglot" in lazy and "google-cloud-pubsub" not in lazy  # clients.py's publisher: not bill's


def test_a_requirement_the_function_lacks_is_reported():
    fresh = package.requirements_text("ingest")
    without_pubsub = "\n".join(line for line in fresh.splitlines() if not line.startswith("google-cloud-pubsub=="))
    assert any("missing" in p and "google-cloud-pubsub" in p for p in package.staleness("ingest", fresh, without_pubsub))


def test_zips_are_deterministic_and_named_by_their_content(tmp_path):
    first = package.build_all(tmp_path / "a")
    second = package.build_all(tmp_path / "b")
    assert first == second
    assert sorted(first) == package.function_names()
    for name, entry in first.items():
        a, b = (tmp_path / d / entry["zip"] for d in ("a", "b"))
        assert a.read_bytes() == b.read_bytes()
        assert entry["zip"] == f"{name}-{entry['sha256'][:16]}.zip"
        assert (entry["entry_point"], entry["signature_type"]) == package.entry_point(name)
        with zipfile.ZipFile(a) as archive:
            names = archive.namelist()
            assert names == sorted(names)
            assert {"main.py", "requirements.txt", "meterline/__init__.py", "meterline/adapters/sql/events.json"} <= set(names)
            assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
            assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert len({e["sha256"] for e in first.values()}) == len(first)
    assert json.loads((tmp_path / "a" / package.MANIFEST).read_text()) == first


def test_a_change_renames_only_its_function(tmp_path, monkeypatch):
    before = package.build_all(tmp_path / "before")
    copy = tmp_path / "functions"
    for name in package.function_names():
        (copy / name).mkdir(parents=True)
        for f in (package.FUNCTIONS_DIR / name).iterdir():
            if f.is_file():
                (copy / name / f.name).write_bytes(f.read_bytes())
    (copy / "admin" / "main.py").write_text((copy / "admin" / "main.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(package, "FUNCTIONS_DIR", copy)
    after = package.build_all(tmp_path / "after")
    changed = {name for name in before if before[name]["zip"] != after[name]["zip"]}
    assert changed == {"admin"}


# -- the zips in clean virtualenvs ---------------------------------------------------------------

# Run in each function's venv, from its unzipped folder: find the entry point the way the
# platform does (the function main.py registers with a functions_framework decorator), serve
# one request through the test client, build what the function builds later (package.LATER),
# and say where meterline was imported from.
_SERVE = textwrap.dedent(r"""
    import importlib.util, json, sys
    import functions_framework
    from functions_framework import _function_registry

    spec = importlib.util.spec_from_file_location("main_probe", "main.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    (target, signature), = _function_registry.REGISTRY_MAP.items()
    client = functions_framework.create_app(target, "main.py", signature).test_client()
    if signature == "cloudevent":
        from cloudevents.http import CloudEvent, to_structured
        headers, body = to_structured(CloudEvent({"type": "test.garbage", "source": "//test"}, {"not": "a pubsub message"}))
        response = client.post("/", headers=headers, data=body)
    else:
        response = client.get("/")
    exec(sys.argv[1])
    import meterline
    print(json.dumps({"target": target, "signature": signature, "status": response.status_code,
                      "content_type": response.content_type, "body": response.get_json(silent=True),
                      "meterline": meterline.__file__}))
""")


def _clean_env(name: str) -> dict[str, str]:
    return packaged.clean_env(
        METERLINE_BACKEND="gcp",
        GOOGLE_CLOUD_PROJECT="package-test",
        # Nothing listens there: building a client opens no connection.
        PUBSUB_EMULATOR_HOST="127.0.0.1:9",
        FIRESTORE_EMULATOR_HOST="127.0.0.1:9",
        BIGQUERY_EMULATOR_HOST="http://127.0.0.1:9",
        METERLINE_STRIPE_API_KEY="sk_test_package",
        METERLINE_STRIPE_WEBHOOK_SECRET="whsec_package",
        METERLINE_PORTAL_SIGNING_KEY="package-test-signing-key-of-32-bytes-or-more",
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """{function: (its venv's python, its unzipped folder)}."""
    return {name: (i.python, i.folder) for name, i in packaged.installed(tmp_path_factory).items()}


@pytest.mark.parametrize("name", package.function_names())
def test_each_zip_installs_into_a_clean_venv_and_serves_a_request(installed, name):
    python, folder = installed[name]
    proc = subprocess.run([str(python), "-c", _SERVE, package.LATER.get(name, "")], cwd=folder,
                          env=_clean_env(name), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    entry, signature = package.entry_point(name)
    assert (result["target"], result["signature"]) == (entry, signature)
    assert Path(result["meterline"]).is_relative_to(folder), "meterline must come from the zip"
    # A real handler answered, in JSON (no credentials, no store: a 4xx, or process's 500 for a
    # message that is not a Pub/Sub envelope).
    assert result["content_type"].startswith("application/json"), result
    assert isinstance(result["body"], dict), result
    if signature == "cloudevent":
        assert result["status"] in (400, 500), result
    else:
        assert 400 <= result["status"] < 500, result


def test_the_base_venv_holds_only_what_every_function_pins(installed):
    # The shared base is the intersection: a package one function needs is not in the base,
    # so another function's venv cannot import it by accident.
    python, _ = installed["ingest"]
    probe = "import importlib.util, sys; print(importlib.util.find_spec('stripe') is None)"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=_clean_env("ingest"),
                          check=True).stdout.strip() == "True"
    assert sysconfig.get_paths()["purelib"] not in subprocess.run(
        [str(python), "-c", "import sys; print(sys.path)"], capture_output=True, text=True, env=_clean_env("ingest"),
        check=True).stdout
