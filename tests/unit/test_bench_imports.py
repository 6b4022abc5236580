"""`make bench` is not part of the test run, so a refactor can break it silently.

Importing every benchmark module catches the commonest break (a moved or renamed helper) in
well under a second; the benchmarks themselves stay out of the suite.
"""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(p.stem for p in BENCH_DIR.glob("*.py"))


def test_the_bench_folder_has_modules():
    assert {"run", "bench_ingest", "bench_process", "bench_pricing", "loadgen"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_bench_module_imports(module):
    # A fresh interpreter: bench modules put bench/ and the repo root on sys.path themselves.
    done = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import {module}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
