"""Cold start per function: import its main.py and build the runtime it serves requests with.

    python bench/bench_coldstart.py [--rounds N] [--shared DIR] [--against OLD_DIR]

Each measurement is a fresh interpreter (as a new Cloud Functions instance is), on the gcp
backend with emulator hosts that nothing listens on: building a Google client opens no
connection, so this times the imports and the construction only. It also counts the Google
SDK modules each function loaded. `--shared` points at another checkout's `shared/`, to
measure an older version the same way (the child uses whichever runtime API it finds).
`--against OLD_DIR` measures both, old and new alternately in each round (which goes first
alternates too), so that a machine whose speed drifts slows both alike; it prints each one's
median and the median and range of the per-round ratios new/old.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ("ingest", "process", "admin", "bill", "stripe_webhook", "portal")

# The child: time the import of functions/<name>/main.py, then the runtime's construction.
_CHILD = r"""
import importlib.util, sys, time
name, functions_dir = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("main", f"{functions_dir}/{name}/main.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
t1 = time.perf_counter()
try:
    from meterline import runtime
    getattr(runtime, f"{name}_runtime")()
except (ImportError, AttributeError):  # the version before per-function runtimes
    from meterline.wiring import get_runtime
    get_runtime()
t2 = time.perf_counter()
sdks = sorted({m.split(".")[2] for m in sys.modules if m.startswith("google.cloud.") and m.count(".") >= 2}
              & {"pubsub_v1", "firestore", "firestore_v1", "bigquery"})
print(f"{(t1 - t0) * 1000:.1f} {(t2 - t1) * 1000:.1f} {','.join(sdks) or '-'}")
"""


def measure(name: str, shared: Path, functions_dir: Path) -> tuple[float, float, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(shared),
        "METERLINE_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": "coldstart",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
        "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9",
        # The secrets the webhook and the portal refuse to start without (dummies: nothing is signed).
        "METERLINE_STRIPE_WEBHOOK_SECRET": "whsec_coldstart",
        "METERLINE_PORTAL_SIGNING_KEY": "coldstart-signing-key-of-32-characters!",
    }
    out = subprocess.run([sys.executable, "-c", _CHILD, name, str(functions_dir)], env=env, capture_output=True,
                         text=True, timeout=120, check=True, stdin=subprocess.DEVNULL).stdout.split()
    return float(out[0]), float(out[1]), out[2]


def run_coldstart_bench(rounds: int = 5, shared: Path = REPO_ROOT / "shared") -> dict[str, dict]:
    functions_dir = shared.parent / "functions"
    results: dict[str, dict] = {}
    for name in FUNCTIONS:
        samples = [measure(name, shared, functions_dir) for _ in range(rounds)]
        results[name] = {
            "import_ms": statistics.median(s[0] for s in samples),
            "build_ms": statistics.median(s[1] for s in samples),
            "total_ms": statistics.median(s[0] + s[1] for s in samples),
            "sdks": samples[-1][2],
        }
    return results


def compare_coldstart(rounds: int, shared: Path, old_shared: Path) -> dict[str, dict]:
    results: dict[str, dict] = {}
    for name in FUNCTIONS:
        totals: dict[Path, list[float]] = {old_shared: [], shared: []}
        sdks: dict[Path, str] = {}
        ratios = []
        for i in range(rounds):
            for side in ((old_shared, shared) if i % 2 == 0 else (shared, old_shared)):
                imported, built, sdks[side] = measure(name, side, side.parent / "functions")
                totals[side].append(imported + built)
            ratios.append(totals[shared][-1] / totals[old_shared][-1])
        results[name] = {
            "old_ms": statistics.median(totals[old_shared]), "new_ms": statistics.median(totals[shared]),
            "ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
            "old_sdks": sdks[old_shared], "new_sdks": sdks[shared],
        }
    return results


def print_comparison(results: dict[str, dict]) -> None:
    print(f"  {'function':14s} {'old ms':>7s} {'new ms':>7s}  {'new/old':>7s}  {'range':>11s}  Google SDKs old -> new")
    for name, r in results.items():
        print(f"  {name:14s} {r['old_ms']:7.0f} {r['new_ms']:7.0f}  {r['ratio']:7.2f}  {r['low']:.2f}-{r['high']:.2f}"
              f"  {r['old_sdks']} -> {r['new_sdks']}")


def print_results(results: dict[str, dict]) -> None:
    print(f"  {'function':10s} {'import ms':>10s} {'build ms':>9s} {'total ms':>9s}  Google SDKs loaded")
    for name, r in results.items():
        print(f"  {name:10s} {r['import_ms']:10.0f} {r['build_ms']:9.0f} {r['total_ms']:9.0f}  {r['sdks']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh interpreters per function; medians are shown")
    parser.add_argument("--shared", type=Path, default=REPO_ROOT / "shared", help="the shared/ folder to measure")
    parser.add_argument("--against", type=Path, help="another checkout's shared/: both measured, alternately")
    args = parser.parse_args()
    if args.against:
        print_comparison(compare_coldstart(args.rounds, args.shared.resolve(), args.against.resolve()))
    else:
        print_results(run_coldstart_bench(args.rounds, args.shared.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
