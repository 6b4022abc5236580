"""Each function's zip (`make package`), unzipped and installed into a clean virtualenv the way
the platform's build installs it: tests/terraform/test_package.py serves each one a request,
tests/e2e/test_packaged_functions.py makes each one do its real work on the emulators.

Installing ~55 pinned distributions per function takes ~20 s even from pip's cache, ~2 min for
six functions. So the distributions that EVERY function pins, at the same version, are
installed once into a base venv, and each function gets a fresh venv that sees the base
through a .pth file and pip-installs the rest of its own requirements.txt. Nothing outside a
function's requirements is importable in its venv, so a missing requirement still fails.
Built once per test session, whichever test asks first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from infra import package

PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]


@dataclass(frozen=True)
class Installed:
    """One function's zip, unzipped into `folder`, its requirements installed into `venv`."""

    name: str
    venv: Path
    folder: Path
    entry_point: str
    signature_type: str

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def functions_framework(self) -> list[str]:
        """Its `functions-framework` command (the script lives in the base venv: run the module)."""
        return [str(self.python), "-m", "functions_framework"]


def clean_env(**settings: str) -> dict[str, str]:
    """An environment that lends a function's venv nothing of this one (no PYTHONPATH, no user
    site), plus `settings`."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR", "PIP_CACHE_DIR") if k in os.environ}
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "NO_PROXY": "127.0.0.1,localhost"})
    env.update(settings)
    return env


def _venv(path: Path, base_site: Path | None = None) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, capture_output=True)
    python = path / "bin" / "python"
    if base_site is not None:
        Path(_purelib(python), "meterline_test_base.pth").write_text(f"{base_site}\n")
    return python


def _purelib(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()


def _pip(python: Path, requirements: Path) -> None:
    proc = subprocess.run([str(python), *PIP, "-r", str(requirements)], capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"pip install -r {requirements} failed:\n{proc.stderr[-3000:]}")


def install(root: Path) -> dict[str, Installed]:
    """Build every zip into root/build, unzip each into root/src/<name> and install it (see the
    module doc); {function: Installed}."""
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
    base_site = Path(_purelib(base_python))

    def one(name: str) -> Installed:
        python = _venv(root / "venvs" / name, base_site)
        _pip(python, root / "src" / name / "requirements.txt")
        entry = manifest[name]
        return Installed(name, python.parent.parent, root / "src" / name, entry["entry_point"], entry["signature_type"])

    with ThreadPoolExecutor(max_workers=2) as pool:  # 2 cores
        return {i.name: i for i in pool.map(one, manifest)}


_lock = threading.Lock()
_installed: dict[str, Installed] | None = None


def installed(tmp_path_factory) -> dict[str, Installed]:
    """`install` once per test session (pytest's tmp_path_factory owns the folder)."""
    global _installed
    with _lock:
        if _installed is None:
            _installed = install(tmp_path_factory.mktemp("packages"))
        return _installed
