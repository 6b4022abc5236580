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


def test_the_single_event_verdict_pairs_each_round_with_its_own_no_op():
    sys.path.insert(0, str(BENCH_DIR))
    try:
        from run import paired_ratios
    finally:
        sys.path.remove(str(BENCH_DIR))

    class Phase:
        def __init__(self, round, requests_per_s):
            self.round, self.requests_per_s = round, requests_per_s

    noop = [Phase(1, 1000.0), Phase(2, 500.0), Phase(3, 0.0)]
    ingest = [Phase(1, 800.0), Phase(2, 450.0), Phase(3, 10.0)]
    # Round 2's neighbour slowed both alike: its ratio is 90 %, not 45 % of round 1's no-op.
    # A round whose no-op answered nothing gives no ratio rather than a division by zero.
    assert paired_ratios(ingest, noop) == [0.8, 0.9]
