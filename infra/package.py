"""Package every Cloud Function: one deterministic zip per folder in functions/, named by its content hash.

    python infra/package.py              # refresh stale requirements, build build/<fn>-<hash>.zip + build/packages.json
    python infra/package.py --check      # exit 1 if a functions/*/requirements.txt no longer matches what it imports
    python infra/package.py --out DIR    # build into DIR instead of build/

A zip holds the function's folder (`main.py` and its pinned `requirements.txt`) and the
`meterline` package (shared/meterline, with its SQL, JSON and YAML files), so that the platform's
build installs the requirements and `from meterline ...` resolves from the zip's root.

**Requirements** are derived, not written by hand: a fresh interpreter (this venv's, with the
editable meterline) imports the function's main.py through functions-framework, serves it one
request (which builds its runtime, as a cold start does), then touches what the function builds
only later (`LATER`: ingest's warehouse on GET /events, process's dead-letter topic, bill's Stripe
client, ...). Every third-party module then loaded is mapped to the installed distribution that
owns its file. One request does not run every line, so the imports written inside functions
of each meterline module the function loaded (`literal()`'s sqlglot, which only a usage query
calls) are read from the source and count too, following meterline's own lazy imports; only
the composition modules (`COMPOSITION`), whose lazy imports ARE the choice of what to build,
are left to the probe, which builds exactly what the function builds. Those distributions,
plus what they need to install (their `Requires-Dist`, with markers and extras), pinned at the
installed versions, are the function's requirements. So ingest gets Pub/Sub, Firestore and
BigQuery, never duckdb or stripe. tests/e2e/test_packaged_functions.py proves the result: each
zip, installed into a clean venv, does its real work on the emulators.

`make package` rewrites a requirements.txt only when its set of distributions or the pin of
one that the function imports directly changed (a version bump in the root requirements.txt),
so transitive versions do not churn from one developer's venv to another's.
tests/terraform/test_package.py fails when a committed requirements.txt is stale.

**Determinism**: entries sorted, timestamps fixed to 1980-01-01, modes 0644, no caches; the
name carries a hash of the entries' names and bytes (not of the compressed zip, which depends
on zlib's version), so a code or dependency change gives a new object name in the bucket and
Terraform redeploys exactly the functions that changed.
"""

from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
PACKAGE_DIR = REPO_ROOT / "shared" / "meterline"
BUILD_DIR = REPO_ROOT / "build"
MANIFEST = "packages.json"
ROOT_REQUIREMENTS = REPO_ROOT / "requirements.txt"

DECORATORS = {"http": "http", "cloud_event": "cloudevent"}  # functions_framework.<decorator> -> signature type
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold
_SKIP_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}

# What a function builds only on some requests, after its cold start: touched so that what
# they import counts too. A function without an entry builds everything at its first request.
LATER = {
    "ingest": "from meterline.runtime import ingest_runtime as r; r().events",  # GET /events: BigQuery
    "process": "from meterline.runtime import process_runtime as r; r().adapters.dead_letters",  # max age: Pub/Sub
    "admin": "from meterline.runtime import admin_runtime as r; r().invoices",  # GET /invoices
    "bill": "from meterline.runtime import bill_runtime as r; r().adapters.payment_provider",  # Stripe, when a key is set
    "portal": "from meterline.runtime import portal_runtime as r; r().checkout",  # checkout_url: Stripe
}

# The composition modules: each lazy import in them builds one adapter or client for one backend
# (runtime.py's GcpAdapters / EmbeddedAdapters, clients.py's factory per Google client). Which
# of them a function uses is what the probe finds by building its runtime (and `LATER`); read
# from the source, they would give every function every backend's SDK.
COMPOSITION = ("meterline.runtime", "meterline.adapters.gcp.clients")

# The child: load main.py as the platform does, serve one request, touch LATER, then name the
# distribution owning each loaded module's file (printed as JSON). Runs in a fresh interpreter.
_CHILD = r"""
import sys
baseline = set(sys.modules)  # what the interpreter loads before any code (site, .pth hooks)
import importlib.metadata as md, json, os
name, source, signature, later = sys.argv[1:5]
sys.path.insert(0, os.path.dirname(source))
import functions_framework
app = functions_framework.create_app(name, source, signature)
client = app.test_client()
if signature == "cloudevent":
    from cloudevents.http import CloudEvent, to_structured
    headers, body = to_structured(CloudEvent({"type": "package.probe", "source": "//package"}, {"not": "pubsub"}))
    status = client.post("/", headers=headers, data=body).status_code
else:
    status = client.get("/").status_code
if later:
    exec(later)
owners = {}
for dist in md.distributions():
    for f in dist.files or ():
        if f.suffix in (".py", ".so", ".pyd"):
            owners[os.path.realpath(dist.locate_file(f))] = dist.metadata["Name"]
used = set()
for module_name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None)
    if module_name in baseline:
        continue
    if path and os.path.realpath(path) in owners:
        used.add(owners[os.path.realpath(path)])
# Imports written inside functions (and the modules they name) of every meterline module now
# loaded, except the composition modules: what a request path the probe did not take imports.
import ast, importlib.util
composition = set(sys.argv[5].split(","))


def _type_checking(node):
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree, package):
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking(node):
            continue  # never run
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                yield base, alias.name
        stack.extend(ast.iter_child_nodes(node))


def _spec(name):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


todo = [m for m in list(sys.modules) if m == "meterline" or m.startswith("meterline.")]
scanned, lazy, unresolved = set(), set(), set()
while todo:
    module_name = todo.pop()
    if module_name in scanned or module_name in composition:
        continue
    scanned.add(module_name)
    spec = _spec(module_name)
    if spec is None or not (spec.origin or "").endswith(".py"):
        continue
    package = module_name if spec.submodule_search_locations is not None else module_name.rpartition(".")[0]
    with open(spec.origin, encoding="utf-8") as source_file:
        tree = ast.parse(source_file.read())
    for base, attr in _imports(tree, package):
        top = base.partition(".")[0]
        if not top or top in sys.stdlib_module_names or top == "__future__":
            continue
        # `from x import y`: y is a submodule, or a name defined in x.
        candidates = [f"{base}.{attr}", base] if attr else [base]
        if top == "meterline":
            todo.extend(c for c in candidates if _spec(c) is not None)
            continue
        for candidate in candidates:
            spec = _spec(candidate)
            if spec is not None and spec.origin and os.path.realpath(spec.origin) in owners:
                lazy.add(owners[os.path.realpath(spec.origin)])
                break
        else:
            unresolved.add(base)
# zoneinfo reads the tz database from the OS or, where the OS has none, from `tzdata`.
if "zoneinfo" in sys.modules:
    used.add("tzdata")
print(json.dumps({"status": status, "distributions": sorted(used | lazy), "lazy": sorted(lazy - used),
                  "unresolved": sorted(unresolved)}))
"""


# Distributions a library imports only when they happen to be installed, and works without:
# left out of the requirements (this venv has them for the dev tools). Reviewed by hand.
OPTIONAL = {
    "httpx": "stripe builds its async HTTP client with httpx and anyio when both are installed; "
             "Meterline calls Stripe synchronously (urllib/requests)",
    "anyio": "see httpx",
    "httpcore": "httpx's own",
    "h11": "httpx's own",
    "sniffio": "anyio's own",
    "pygments": "httpx's command line",
}
SHIPPED = {"meterline"}  # in the zip itself, never installed


class PackagingError(RuntimeError):
    """A function cannot be packaged (no entry point, its probe failed); the message says why."""


# -- the functions ------------------------------------------------------------------------------


def function_names() -> list[str]:
    """Every folder of functions/ with a main.py: each is deployed (terraform/functions.tf)."""
    return sorted(p.parent.name for p in FUNCTIONS_DIR.glob("*/main.py"))


def entry_point(name: str) -> tuple[str, str]:
    """(entry point, signature type) of functions/<name>/main.py: its one function decorated with
    `functions_framework.http` or `functions_framework.cloud_event` (read from the source, not run)."""
    tree = ast.parse((FUNCTIONS_DIR / name / "main.py").read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Attribute) and isinstance(dec.value, ast.Name)
                        and dec.value.id == "functions_framework" and dec.attr in DECORATORS):
                    found.append((node.name, DECORATORS[dec.attr]))
    if len(found) != 1:
        raise PackagingError(f"functions/{name}/main.py must define exactly one functions_framework entry point, found {found}")
    return found[0]


# -- requirements ---------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def _probe_env() -> dict[str, str]:
    """The gcp backend with emulator hosts nothing listens on: building a Google client opens no
    connection, and a request that needs a store fails after its imports. Every secret setting
    gets a dummy, so a runtime that needs one (Stripe's key, the webhook secret) is built."""
    from pydantic import SecretStr

    from meterline.config import Settings  # this venv's meterline (editable)

    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_")}
    env.update({
        "METERLINE_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": "package-probe",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9",
        "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9",
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    for field, info in Settings.model_fields.items():
        if info.annotation in (SecretStr, SecretStr | None):
            env[f"METERLINE_{field.upper()}"] = f"package-probe-{field}".ljust(48, "-")  # keys want 32+ characters
    return env


@functools.cache  # one probe per function and process (the tests ask twice)
def imported_distributions(name: str) -> tuple[str, ...]:
    """The installed distributions whose modules functions/<name> loads (see the module doc)."""
    target, signature = entry_point(name)
    cmd = [sys.executable, "-c", _CHILD, target, str(FUNCTIONS_DIR / name / "main.py"), signature, LATER.get(name, ""),
           ",".join(COMPOSITION)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_probe_env(), cwd=REPO_ROOT,
                          timeout=180, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise PackagingError(f"probing functions/{name} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if signature == "http" and result["status"] >= 500:
        # The runtime was not built (a setting it needs?): what it imports would be missed.
        raise PackagingError(f"probing functions/{name}: its probe request answered {result['status']}:\n{proc.stderr[-3000:]}")
    if result["unresolved"]:
        # An import no installed distribution provides: the function would fail where it runs.
        raise PackagingError(f"functions/{name} imports {result['unresolved']}, which this venv does not have: "
                             "add its distribution to requirements.txt and run `make venv`")
    leave_out = {_canonical(d) for d in (*OPTIONAL, *SHIPPED)}
    return tuple(d for d in result["distributions"] if _canonical(d) not in leave_out)


def _installed(name: str):
    import importlib.metadata as md

    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        raise PackagingError(f"{name} is required but not installed in {sys.prefix}: run `make venv`") from None


def closure(roots: Iterable[str]) -> dict[str, str]:
    """{distribution name: installed version} for `roots` and everything they need to install
    (Requires-Dist, markers evaluated for this interpreter, extras followed)."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    base_env = default_environment()
    pinned: dict[str, str] = {}
    names: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    while todo:
        name, extras = todo.pop()
        key = (_canonical(name), extras)
        if key in seen:
            continue
        seen.add(key)
        dist = _installed(name)
        canonical = _canonical(dist.metadata["Name"])
        names[canonical] = dist.metadata["Name"]
        pinned[canonical] = dist.version
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({**base_env, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((req.name, frozenset(req.extras)))
    return {names[k]: v for k, v in sorted(pinned.items())}


def root_pins() -> dict[str, str]:
    """{canonical name: version} pinned in the repo's requirements.txt (the versions we choose)."""
    from packaging.requirements import Requirement

    pins = {}
    for line in ROOT_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            pins[_canonical(req.name)] = str(req.specifier).removeprefix("==")
    return pins


def requirements_text(name: str, imported: Iterable[str] | None = None) -> str:
    """The requirements.txt that functions/<name> should hold, from this venv."""
    imported = imported_distributions(name) if imported is None else imported
    everything = closure(imported)
    direct = {_canonical(d) for d in imported}
    lines = [
        f"# Generated by `make package` (infra/package.py) from what the `{name}` function imports; do not edit.",
        "# Imported by the function:",
        *(f"{n}=={v}" for n, v in everything.items() if _canonical(n) in direct),
        "# Needed by those to install and run:",
        *(f"{n}=={v}" for n, v in everything.items() if _canonical(n) not in direct),
    ]
    return "\n".join(lines) + "\n"


def parse_requirements(text: str) -> tuple[dict[str, str], set[str]]:
    """({canonical name: pinned version}, the canonical names listed as imported) of a
    requirements.txt written by `requirements_text`."""
    pins: dict[str, str] = {}
    imported: set[str] = set()
    section = None
    for line in text.splitlines():
        if line.startswith("# Imported"):
            section = "imported"
        elif line.startswith("# Needed"):
            section = "needed"
        elif line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version.strip()
            if section == "imported":
                imported.add(_canonical(name))
    return pins, imported


def staleness(name: str, fresh: str, committed: str | None) -> list[str]:
    """Why a committed requirements.txt differs from `fresh` in a way that matters: another set
    of distributions, another set imported directly, or a directly imported distribution that
    the root requirements.txt pins at another version. Transitive versions may differ (they
    depend on when a venv was installed)."""
    if committed is None:
        return ["it does not exist"]
    (want, want_direct), (have, have_direct) = parse_requirements(fresh), parse_requirements(committed)
    problems = []
    if set(want) - set(have):
        problems.append(f"missing {sorted(set(want) - set(have))}")
    if set(have) - set(want):
        problems.append(f"not needed {sorted(set(have) - set(want))}")
    if want_direct != have_direct:
        problems.append(f"imports {sorted(want_direct)}, lists {sorted(have_direct)} as imported")
    pins = root_pins()
    for dist in sorted(want_direct & set(have)):
        if dist in pins and have[dist] != pins[dist]:
            problems.append(f"{dist}=={have[dist]} but requirements.txt pins {pins[dist]}")
    return problems


def refresh_requirements(names: Iterable[str], check_only: bool = False) -> dict[str, list[str]]:
    """Rewrite each stale functions/<name>/requirements.txt (unless `check_only`); {name: problems}."""
    from concurrent.futures import ThreadPoolExecutor

    names = list(names)
    with ThreadPoolExecutor(max_workers=2) as pool:  # each probe is a fresh interpreter
        texts = dict(zip(names, pool.map(requirements_text, names), strict=True))
    stale = {}
    for name in names:
        path = FUNCTIONS_DIR / name / "requirements.txt"
        fresh = texts[name]
        problems = staleness(name, fresh, path.read_text() if path.exists() else None)
        if problems:
            stale[name] = problems
            if not check_only:
                path.write_text(fresh)
    return stale


# -- the zip ---------------------------------------------------------------------------------------


def _files(root: Path, prefix: str) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_dir() or _SKIP_PARTS.intersection(rel.parts) or path.suffix in _SKIP_SUFFIXES:
            continue
        out.append((f"{prefix}{rel.as_posix()}", path))
    return out


def entries(name: str) -> list[tuple[str, bytes]]:
    """(name in the zip, bytes) of functions/<name>'s bundle, sorted by name."""
    files = _files(FUNCTIONS_DIR / name, "") + _files(PACKAGE_DIR, "meterline/")
    names = [arc for arc, _ in files]
    if len(set(names)) != len(names):
        raise PackagingError(f"functions/{name} holds a path that the meterline package also holds")
    if "requirements.txt" not in names:
        raise PackagingError(f"functions/{name}/requirements.txt is missing: run `make package`")
    return sorted((arc, path.read_bytes()) for arc, path in files)


def content_hash(items: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for arc, data in items:
        digest.update(arc.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def build_zip(name: str, out_dir: Path) -> dict[str, str]:
    """Write out_dir/<name>-<hash16>.zip; its manifest entry."""
    items = entries(name)
    digest = content_hash(items)
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_name = f"{name}-{digest[:16]}.zip"
    target = out_dir / zip_name
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as archive:
        for arc, data in items:
            info = zipfile.ZipInfo(arc, date_time=_FIXED_TIME)
            info.create_system = 3  # Unix, whatever builds it
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compresslevel=9)
    tmp.replace(target)
    earlier = re.compile(re.escape(name) + r"-[0-9a-f]{16}\.zip")
    for old in out_dir.iterdir():  # earlier builds of this function
        if old != target and earlier.fullmatch(old.name):
            old.unlink()
    target_name, signature = entry_point(name)
    return {"zip": zip_name, "sha256": digest, "entry_point": target_name, "signature_type": signature}


def build_all(out_dir: Path = BUILD_DIR, names: Iterable[str] | None = None) -> dict[str, dict[str, str]]:
    """Build every function's zip into out_dir and write out_dir/packages.json (Terraform reads it)."""
    manifest = {name: build_zip(name, out_dir) for name in (names or function_names())}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Package each Cloud Function into a content-addressed zip.")
    parser.add_argument("--check", action="store_true", help="only check that functions/*/requirements.txt are fresh")
    parser.add_argument("--out", type=Path, default=BUILD_DIR, help="where the zips and packages.json go (build/)")
    args = parser.parse_args(argv)
    names = function_names()
    try:
        stale = refresh_requirements(names, check_only=args.check)
        for name, problems in stale.items():
            verb = "is stale" if args.check else "rewritten"
            print(f"functions/{name}/requirements.txt {verb}: {'; '.join(problems)}", file=sys.stderr)
        if args.check:
            return 1 if stale else 0
        manifest = build_all(args.out.resolve(), names)
    except PackagingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for entry in manifest.values():
        print(f"{args.out / entry['zip']}  ({entry['signature_type']}, entry point {entry['entry_point']})")
    print(f"{args.out / MANIFEST}: terraform/functions.tf deploys these")
    return 0


if __name__ == "__main__":
    sys.exit(main())
