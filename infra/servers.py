"""Start and stop the real local servers that the tests run against.

Stdlib only. Importable as ``infra.servers`` from the repo root, and runnable:

    python infra/servers.py check          # which servers can run here (exit 1 if the SDK emulators are missing)
    python infra/servers.py ensure-venvs   # create .venv-bqemu and .venv-localstripe (idempotent)
    python infra/servers.py ensure-checkov # create .venv-checkov (Terraform's static analysis; idempotent)
    python infra/servers.py start NAME     # run one server in the foreground (pubsub|firestore|bigquery|stripe)
    python infra/servers.py gcp-local      # all of them, the six functions and the router (infra/gcp_local.py)

Each ``start_*`` function binds its server to a free port on 127.0.0.1, waits
until it answers, and returns a :class:`LocalServer` handle (also a context
manager) with ``host``, ``port``, ``url``, ``env`` and ``stop()``. Every server
runs in its own session (process group), and ``stop()`` kills that whole group
by PID. Server logs go to a file in a private temp dir (``handle.log_path``).

| function                  | env var set in ``handle.env``                 |
|---------------------------|-----------------------------------------------|
| start_pubsub_emulator     | PUBSUB_EMULATOR_HOST=127.0.0.1:P              |
| start_firestore_emulator  | FIRESTORE_EMULATOR_HOST=127.0.0.1:P           |
| start_bigquery_emulator   | BIGQUERY_EMULATOR_HOST=http://127.0.0.1:P     |
| start_stripe_server       | STRIPE_API_BASE=http://127.0.0.1:P            |
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA_DIR = REPO_ROOT / "infra"
DEFAULT_START_TIMEOUT = 60.0

BQEMU_VENV = REPO_ROOT / ".venv-bqemu"
BQEMU_REQUIREMENTS = INFRA_DIR / "requirements-bqemulator.txt"
LOCALSTRIPE_VENV = REPO_ROOT / ".venv-localstripe"
LOCALSTRIPE_REQUIREMENTS = INFRA_DIR / "requirements-localstripe.txt"
LOCALSTRIPE_LAUNCHER = INFRA_DIR / "localstripe_launcher.py"
CHECKOV_VENV = REPO_ROOT / ".venv-checkov"
CHECKOV_REQUIREMENTS = INFRA_DIR / "requirements-checkov.txt"

SDK_HINT = (
    "install the Google Cloud SDK with the pubsub-emulator and "
    "cloud-firestore-emulator components and Java 17"
)
_FALLBACK_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
_STAMP_NAME = ".meterline-stamp"
_BIND_ERRORS = ("address already in use", "bindexception", "failed to bind", "errno 98")


class ServerUnavailable(RuntimeError):
    """A server's software is not installed on this machine."""


class ServerStartError(RuntimeError):
    """A server was found but did not become ready."""


# --------------------------------------------------------------------------
# The handle
# --------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)  # identity equality/hash: handles live in a set
class LocalServer:
    """A running local server. ``stop()`` (or leaving the ``with``) ends it."""

    name: str
    host: str
    port: int
    url: str
    env: dict[str, str]
    pid: int
    log_path: Path
    _proc: subprocess.Popen = dataclasses.field(repr=False)
    _workdir: Path = dataclasses.field(repr=False)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Kill the server's whole process group (SIGTERM, then SIGKILL). Idempotent."""
        _kill_group(self._proc, timeout)
        _LIVE.discard(self)
        shutil.rmtree(self._workdir, ignore_errors=True)


@dataclasses.dataclass(eq=False)
class FirestoreEmulator(LocalServer):
    def reset(self, project: str) -> None:
        """Delete every document of ``project``'s default database."""
        _http(
            "DELETE",
            f"{self.url}/emulator/v1/projects/{project}/databases/(default)/documents",
        )


@dataclasses.dataclass(eq=False)
class BigQueryEmulator(LocalServer):
    grpc_port: int = 0
    project: str = "test"


@dataclasses.dataclass(eq=False)
class StripeServer(LocalServer):
    def reset(self) -> None:
        """Forget every object (``DELETE /_config/data``)."""
        _http("DELETE", f"{self.url}/_config/data")


_LIVE: set[LocalServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)


# --------------------------------------------------------------------------
# Locating the Google Cloud SDK and java
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def sdk_root() -> Path | None:
    """The Google Cloud SDK root: $CLOUDSDK_ROOT, else `gcloud info`, else /usr/lib/google-cloud-sdk."""
    override = os.environ.get("CLOUDSDK_ROOT")
    if override:
        return Path(override)
    gcloud = shutil.which("gcloud")
    if gcloud:
        env = dict(
            os.environ,
            CLOUDSDK_CORE_DISABLE_USAGE_REPORTING="true",
            CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK="true",
            CLOUDSDK_CORE_DISABLE_PROMPTS="1",
        )
        try:
            out = subprocess.run(
                [gcloud, "info", "--format=value(installation.sdk_root)"],
                capture_output=True, text=True, timeout=60, env=env,
                stdin=subprocess.DEVNULL, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            return Path(out)
    if _FALLBACK_SDK_ROOT.is_dir():
        return _FALLBACK_SDK_ROOT
    return None


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        return str(Path(java_home, "bin", "java"))
    java = shutil.which("java")
    if not java:
        raise ServerUnavailable(f"java not found on PATH: {SDK_HINT}")
    return java


def pubsub_emulator_script() -> Path:
    root = sdk_root()
    script = (root or Path("$SDK")) / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    if root is None or not os.access(script, os.X_OK):
        raise ServerUnavailable(f"Pub/Sub emulator not found at {script}: {SDK_HINT}")
    return script


def firestore_emulator_jar() -> Path:
    root = sdk_root()
    jar = (root or Path("$SDK")) / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
    if root is None or not jar.is_file():
        raise ServerUnavailable(f"Firestore emulator not found at {jar}: {SDK_HINT}")
    return jar


# --------------------------------------------------------------------------
# The servers
# --------------------------------------------------------------------------


def start_pubsub_emulator(timeout: float = DEFAULT_START_TIMEOUT) -> LocalServer:
    """The Pub/Sub emulator, started directly (not via `gcloud beta emulators`,
    whose java child outlives a SIGTERM). Ready when its log says `Server started`."""
    script = pubsub_emulator_script()
    _java()

    def launch(port: int, workdir: Path, log: Path) -> LocalServer:
        proc = _spawn([str(script), f"--host={HOST}", f"--port={port}"], workdir, log)
        server = LocalServer(
            "pubsub", HOST, port, f"http://{HOST}:{port}",
            {"PUBSUB_EMULATOR_HOST": f"{HOST}:{port}"}, proc.pid, log, proc, workdir,
        )
        _wait_ready(server, timeout, lambda: "Server started" in _read(log))
        return server

    return _start_with_retry("pubsub", launch)


def start_firestore_emulator(timeout: float = DEFAULT_START_TIMEOUT) -> FirestoreEmulator:
    """The Firestore emulator (the SDK's jar run by java). Ready when `GET /` answers `Ok`."""
    jar = firestore_emulator_jar()
    java = _java()

    def launch(port: int, workdir: Path, log: Path) -> FirestoreEmulator:
        cmd = [
            java, "-Duser.language=en", "-cp", str(jar),
            "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
            "start", f"--host={HOST}", f"--port={port}",
        ]
        proc = _spawn(cmd, workdir, log)
        url = f"http://{HOST}:{port}"
        server = FirestoreEmulator(
            "firestore", HOST, port, url,
            {"FIRESTORE_EMULATOR_HOST": f"{HOST}:{port}"}, proc.pid, log, proc, workdir,
        )
        _wait_ready(server, timeout, lambda: _http_probe(url + "/")[1].strip() == "Ok")
        return server

    return _start_with_retry("firestore", launch)


def start_bigquery_emulator(timeout: float = DEFAULT_START_TIMEOUT) -> BigQueryEmulator:
    """bqemulator (DuckDB-backed BigQuery REST API) from its own venv, with a
    private HOME that holds the pre-installed DuckDB spatial extension.
    Ready when `GET /bigquery/v2/projects/test/datasets` answers 200."""
    venv = ensure_bqemulator_venv()
    home = venv / "home"

    def launch(port: int, workdir: Path, log: Path) -> BigQueryEmulator:
        grpc_port = _free_port()
        cmd = [
            str(venv / "bin" / "bqemulator"), "start",
            "--rest-host", HOST, "--rest-port", str(port),
            "--grpc-host", HOST, "--grpc-port", str(grpc_port),
            "--project", "test", "--ephemeral",
            "--log-level", "info", "--log-format", "json",
        ]
        env = {
            "HOME": str(home),
            "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
            "BQEMU_ADMIN_ENABLED": "false",
        }
        proc = _spawn(cmd, workdir, log, env)
        url = f"http://{HOST}:{port}"
        server = BigQueryEmulator(
            "bigquery", HOST, port, url, {"BIGQUERY_EMULATOR_HOST": url},
            proc.pid, log, proc, workdir, grpc_port=grpc_port,
        )
        probe = f"{url}/bigquery/v2/projects/test/datasets"
        _wait_ready(server, timeout, lambda: _http_probe(probe)[0] == 200)
        return server

    return _start_with_retry("bigquery", launch)


def start_stripe_server(timeout: float = DEFAULT_START_TIMEOUT) -> StripeServer:
    """localstripe from its own venv, via infra/localstripe_launcher.py
    (loopback only, no pickle file). Ready when `GET /v1/customers` answers 401."""
    venv = ensure_localstripe_venv()

    def launch(port: int, workdir: Path, log: Path) -> StripeServer:
        cmd = [str(venv / "bin" / "python"), str(LOCALSTRIPE_LAUNCHER), "--port", str(port)]
        proc = _spawn(cmd, workdir, log)
        url = f"http://{HOST}:{port}"
        server = StripeServer(
            "stripe", HOST, port, url, {"STRIPE_API_BASE": url}, proc.pid, log, proc, workdir,
        )
        _wait_ready(server, timeout, lambda: _http_probe(url + "/v1/customers")[0] == 401)
        return server

    return _start_with_retry("stripe", launch)


@contextlib.contextmanager
def running(*starters: Callable[[], LocalServer]):
    """Start servers in order and yield (servers, their merged ``env``); stop them all, in
    reverse order, however the block ends, a failed start included."""
    started: list[LocalServer] = []
    try:
        for start in starters:
            started.append(start())
        yield started, {k: v for server in started for k, v in server.env.items()}
    finally:
        for server in reversed(started):
            server.stop()


@contextlib.contextmanager
def environ(values: dict[str, str]):
    """Set environment variables (e.g. a server's ``env``) for the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_function(
    source: str | Path,
    target: str,
    env: dict[str, str] | None = None,
    signature_type: str | None = None,
    name: str | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> LocalServer:
    """A Cloud Function under the real ``functions-framework`` (gunicorn) of the running venv.

    ``source`` is relative to the repo root; ``env`` is added to this process's environment
    (WORKERS, THREADS, METERLINE_* ...). Ready once it answers any HTTP request. The handle's
    ``pid`` leads the server's process group (the gunicorn master and its workers).
    """
    exe = Path(sys.executable).parent / "functions-framework"
    if not exe.exists():
        raise ServerUnavailable(f"functions-framework not found next to {sys.executable}: run `make venv`")
    label = name or target
    cmd = [str(exe), "--source", str(REPO_ROOT / source), "--target", target, "--host", HOST]
    if signature_type:
        cmd += ["--signature-type", signature_type]

    def launch(port: int, workdir: Path, log: Path) -> LocalServer:
        proc = _spawn([*cmd, "--port", str(port)], workdir, log, env)
        server = LocalServer(label, HOST, port, f"http://{HOST}:{port}", {}, proc.pid, log, proc, workdir)
        _wait_ready(server, timeout, lambda: _http_probe(f"{server.url}/")[0] != 0)
        return server

    return _start_with_retry(label, launch)


SERVERS: dict[str, Callable[..., LocalServer]] = {
    "pubsub": start_pubsub_emulator,
    "firestore": start_firestore_emulator,
    "bigquery": start_bigquery_emulator,
    "stripe": start_stripe_server,
}


# --------------------------------------------------------------------------
# The private venvs (bqemulator and localstripe pin libraries of their own)
# --------------------------------------------------------------------------


def ensure_bqemulator_venv() -> Path:
    """Create/refresh .venv-bqemu from infra/requirements-bqemulator.txt, and
    copy DuckDB's spatial extension into its private HOME (.venv-bqemu/home)
    so that bqemulator's `INSTALL spatial` needs no network. Idempotent."""

    def post_install(venv: Path) -> None:
        code = (
            "import duckdb, pathlib, duckdb_extension_spatial as m\n"
            "print(duckdb.__version__)\n"
            "print(duckdb.connect().execute('PRAGMA platform').fetchone()[0])\n"
            "print(next(pathlib.Path(m.__file__).parent.rglob('spatial.duckdb_extension')))\n"
        )
        out = _run([str(venv / "bin" / "python"), "-c", code], "inspect duckdb in " + str(venv))
        version, platform, ext = out.split()
        target = venv / "home" / ".duckdb" / "extensions" / f"v{version}" / platform
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ext, target / "spatial.duckdb_extension")

    return _ensure_venv(BQEMU_VENV, BQEMU_REQUIREMENTS, post_install)


def ensure_localstripe_venv() -> Path:
    """Create/refresh .venv-localstripe from infra/requirements-localstripe.txt. Idempotent."""
    return _ensure_venv(LOCALSTRIPE_VENV, LOCALSTRIPE_REQUIREMENTS)


def ensure_checkov_venv() -> Path:
    """Create/refresh .venv-checkov from infra/requirements-checkov.txt (Terraform's static
    analysis, for tests/terraform; not a server, but kept apart the same way). Idempotent."""
    return _ensure_venv(CHECKOV_VENV, CHECKOV_REQUIREMENTS)


def _ensure_venv(
    venv: Path, requirements: Path, post_install: Callable[[Path], None] | None = None
) -> Path:
    stamp = venv / _STAMP_NAME
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    python = venv / "bin" / "python"

    def fresh() -> bool:
        return python.exists() and stamp.exists() and stamp.read_text().strip() == digest

    if fresh():
        return venv
    lock_path = Path(tempfile.gettempdir()) / (
        "meterline-venv-" + hashlib.sha256(str(venv).encode()).hexdigest()[:12] + ".lock"
    )
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing it right now
        if fresh():
            return venv
        stamp.unlink(missing_ok=True)
        works = python.exists() and subprocess.run(
            [str(python), "-c", "pass"], capture_output=True
        ).returncode == 0
        if not works:
            _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"create {venv}")
        _run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "-r", str(requirements)],
            f"pip install -r {requirements} into {venv}",
        )
        if post_install:
            post_install(venv)
        stamp.write_text(digest + "\n")
    return venv


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise ServerUnavailable(f"could not {what} (exit {proc.returncode}):\n{tail}")
    return proc.stdout


# --------------------------------------------------------------------------
# Process plumbing
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _spawn(cmd: list[str], workdir: Path, log: Path, env: dict[str, str] | None = None):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=workdir, env=full_env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _start_with_retry(name: str, launch: Callable[[int, Path, Path], LocalServer], attempts: int = 3):
    """Run ``launch(port, workdir, log)``; retry on another port if the one we
    picked was taken in the meantime."""
    for attempt in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix=f"meterline-{name}-"))
        log = workdir / f"{name}.log"
        try:
            server = launch(_free_port(), workdir, log)
        except ServerStartError:  # the log stays in workdir for a look
            bind_error = any(e in _read(log).lower() for e in _BIND_ERRORS)
            if bind_error and attempt + 1 < attempts:
                shutil.rmtree(workdir, ignore_errors=True)
                continue
            raise
        _LIVE.add(server)
        return server
    raise AssertionError("unreachable")


def _wait_ready(server: LocalServer, timeout: float, ready: Callable[[], bool]) -> None:
    """Poll ``ready()`` until it holds; on failure (or Ctrl-C) kill the server."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if not server.running:
                raise ServerStartError(
                    f"{server.name} server exited with code {server._proc.returncode} "
                    f"before it was ready (log {server.log_path}):\n{_tail(server.log_path)}"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{server.name} server not ready on {server.url} after {timeout:.0f} s "
                    f"(log {server.log_path}):\n{_tail(server.log_path)}"
                )
            time.sleep(0.05)
    except BaseException:
        _kill_group(server._proc, 5)
        raise


def _kill_group(proc: subprocess.Popen, timeout: float) -> None:
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()
    # Anything the leader left behind in its group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(_read(path).splitlines()[-lines:]) or "(empty log)"


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, timeout: float = 10.0) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with _NO_PROXY_OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        if method != "GET":
            raise
        return err.code, err.read().decode(errors="replace")


def _http_probe(url: str) -> tuple[int, str]:
    """(status, body) of a GET, or (0, "") while nothing answers."""
    try:
        return _http("GET", url, timeout=2.0)
    except (OSError, urllib.error.URLError):
        return 0, ""


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _venv_status(venv: Path, requirements: Path) -> str:
    stamp = venv / _STAMP_NAME
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == digest:
        return f"ready ({venv.name})"
    return f"venv {venv.name} not installed yet (installed on first use, or `python infra/servers.py ensure-venvs`)"


def check() -> int:
    """Print which servers can run here; 1 if the SDK emulators or java are missing."""
    missing: list[str] = []
    for name, probe in (
        ("pubsub", pubsub_emulator_script),
        ("firestore", firestore_emulator_jar),
        ("java", _java),
    ):
        try:
            print(f"{name:10s} ok: {probe()}")
        except ServerUnavailable as err:
            print(f"{name:10s} MISSING: {err}")
            missing.append(str(err))
    print(f"{'bigquery':10s} {_venv_status(BQEMU_VENV, BQEMU_REQUIREMENTS)}")
    print(f"{'stripe':10s} {_venv_status(LOCALSTRIPE_VENV, LOCALSTRIPE_REQUIREMENTS)}")
    if missing:
        print(f"error: {missing[0]}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Meterline's real local servers.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="which servers can run here (exit 1 if the SDK emulators are missing)")
    sub.add_parser("ensure-venvs", help="create the bqemulator and localstripe venvs")
    sub.add_parser("ensure-checkov", help="create the checkov venv (tests/terraform)")
    start = sub.add_parser("start", help="run one server in the foreground until Ctrl-C")
    start.add_argument("name", choices=sorted(SERVERS))
    local = sub.add_parser("gcp-local", help="the emulators, localstripe, the six functions and one router, until Ctrl-C")
    local.add_argument("--port", type=int, default=8080, help="the router's port: the one base URL (default 8080)")
    local.add_argument("--project", default="local", help="GOOGLE_CLOUD_PROJECT on the emulators")
    args = parser.parse_args(argv)

    if args.command == "gcp-local":
        if str(REPO_ROOT) not in sys.path:  # run as a script: infra/ is sys.path[0], not the repo
            sys.path.insert(0, str(REPO_ROOT))
        from infra import gcp_local

        try:
            return gcp_local.run(args.port, args.project)
        except (ServerUnavailable, ServerStartError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    if args.command == "check":
        return check()
    if args.command in ("ensure-venvs", "ensure-checkov"):
        ensures = (ensure_checkov_venv,) if args.command == "ensure-checkov" else (
            ensure_bqemulator_venv, ensure_localstripe_venv)
        for ensure in ensures:
            try:
                print(f"ok: {ensure()}")
            except ServerUnavailable as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
        return 0
    try:
        server = SERVERS[args.name]()
    except (ServerUnavailable, ServerStartError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    with server:
        for key, value in server.env.items():
            print(f"export {key}={value}")
        print(f"# pid {server.pid}, log {server.log_path}; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while server.running:
                time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until `meterline serve` (started as `proc`) answers `GET {url}/healthz`; raise
    if it exits first or does not answer in time (tests and benchmarks that start it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"meterline serve exited early ({proc.returncode})")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("meterline serve did not become healthy")
