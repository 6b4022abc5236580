"""`make package`: each function's zip holds what it imports, is built the same twice, and,
installed into a clean virtualenv the way the platform's build would, serves a request.

Installing ~55 pinned distributions per function takes ~20 s even from pip's cache, ~2 min for
six functions. So the distributions that EVERY function pins, at the same version, are
installed once into a base venv, and each function gets a fresh venv that sees the base
through a .pth file and pip-installs the rest of its own requirements.txt. Nothing outside a
function's requirements is importable in its venv, so a missing requirement still fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from infra import package

PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]


def test_requirements_are_what_each_function_imports():
    stale = package.refresh_requirements(package.function_names(), check_only=True)
    assert not stale, f"stale functions/*/requirements.txt (run `make package`): {stale}"
    ingest, _ = package.parse_requirements((package.FUNCTIONS_DIR / "ingest" / "requirements.txt").read_text())
    assert {"google-cloud-pubsub", "google-cloud-firestore", "google-cloud-bigquery", "functions-framework"} <= set(ingest)
    assert not {"duckdb", "stripe", "sqlglot", "pyyaml"} & set(ingest), "ingest imports neither DuckDB nor Stripe"
    bill, _ = package.parse_requirements((package.FUNCTIONS_DIR / "bill" / "requirements.txt").read_text())
    assert "stripe" in bill and "google-cloud-pubsub" not in bill


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


def _venv(path: Path, base_site: Path | None = None) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    python = path / "bin" / "python"
    if base_site is not None:
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "meterline_test_base.pth").write_text(f"{base_site}\n")
    return python


def _pip(python: Path, requirements: Path) -> None:
    proc = subprocess.run([str(python), *PIP, "-r", str(requirements)], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"pip install -r {requirements} failed:\n{proc.stderr[-3000:]}"


def _clean_env(name: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "PIP_CACHE_DIR") if k in os.environ}
    env.update({
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "METERLINE_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": "package-test",
        # Nothing listens there: building a client opens no connection.
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
        "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9",
        "METERLINE_STRIPE_API_KEY": "sk_test_package",
        "METERLINE_STRIPE_WEBHOOK_SECRET": "whsec_package",
        "METERLINE_PORTAL_SIGNING_KEY": "package-test-signing-key-of-32-bytes-or-more",
    })
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """{function: (its venv's python, its unzipped folder)}."""
    root = tmp_path_factory.mktemp("packages")
    manifest = package.build_all(root / "build")
    pins = {}
    for name, entry in manifest.items():
        folder = root / "src" / name
        with zipfile.ZipFile(root / "build" / entry["zip"]) as archive:
            archive.extractall(folder)
        pins[name] = set(package.parse_requirements((folder / "requirements.txt").read_text())[0].items())
    shared = set.intersection(*pins.values())
    (root / "base.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(shared)))
    base_python = _venv(root / "base")
    _pip(base_python, root / "base.txt")
    base_site = Path(subprocess.run([str(base_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip())

    def install(name: str) -> tuple[str, Path]:
        python = _venv(root / "venvs" / name, base_site)
        _pip(python, root / "src" / name / "requirements.txt")
        return name, python

    with ThreadPoolExecutor(max_workers=2) as pool:
        pythons = dict(pool.map(install, manifest))
    return {name: (pythons[name], root / "src" / name) for name in manifest}


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
