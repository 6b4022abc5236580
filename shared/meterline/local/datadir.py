"""Who holds an embedded data dir's warehouse, and how another process reaches it.

DuckDB lets one process open a database file for writing, and not even a reader may open it
beside that process. So the warehouse has one holder at a time, chosen by an exclusive lock
on `<data dir>/warehouse.lock`:

  * `meterline serve` takes it for its lifetime and writes `serve.json` (its URL and a
    per-run local token, mode 0600). A second `serve` on the same dir finds the lock taken
    and refuses with a clear message; nothing is opened twice, so nothing can be corrupted.
  * Every other command opens only what several processes may share (the SQLite file of
    keys, catalog, queue and dedup claims, in WAL mode). A command that needs the warehouse
    goes through the running server's HTTP API with the local token, or, when no server
    runs, takes the lock itself for the duration of the command.

flock is released by the kernel when its holder dies, so a `kill -9` leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

LOCK_FILE = "warehouse.lock"
SERVER_FILE = "serve.json"


class DataDirBusy(Exception):
    """Another process holds the data dir's warehouse (the message says which)."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    url: str
    token: str


def _describe(data_dir: Path) -> str:
    try:
        info = orjson.loads((data_dir / LOCK_FILE).read_bytes() or b"{}")
    except (OSError, orjson.JSONDecodeError):
        info = {}
    holder = info.get("holder", "another meterline process")
    return f"{holder} (pid {info.get('pid', '?')}) holds the warehouse of {data_dir}"


@contextmanager
def hold_warehouse(data_dir: Path, holder: str) -> Iterator[Callable[[ServerInfo], None]]:
    """Hold the warehouse lock for the block; raises DataDirBusy at once if it is taken.

    Yields `announce`: a server calls it with its address once it listens, so that other
    commands can reach it; the address is removed when the block ends.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    server_file = data_dir / SERVER_FILE
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    announced = False

    def announce(server: ServerInfo) -> None:
        nonlocal announced
        tmp = server_file.with_suffix(".tmp")
        fd_tmp = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token: owner only
        with os.fdopen(fd_tmp, "wb") as f:
            f.write(orjson.dumps(server.__dict__))
        os.replace(tmp, server_file)
        announced = True

    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirBusy(_describe(data_dir)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps({"holder": holder, "pid": os.getpid()}), 0)
        try:
            yield announce
        finally:
            if announced:
                server_file.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def running_server(data_dir: Path) -> ServerInfo | None:
    """The `meterline serve` holding this data dir, or None if no server holds it."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: by a server if it left its address
        else:
            return None  # nobody holds it
        try:
            return ServerInfo(**orjson.loads((data_dir / SERVER_FILE).read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError):
            return None  # held by a command, not a server
    finally:
        os.close(fd)


def new_local_token() -> str:
    return "mll_" + secrets.token_urlsafe(32)
