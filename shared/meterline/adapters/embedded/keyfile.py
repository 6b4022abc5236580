"""The portal's signing key: from the configuration, or a key file in the data dir.

On Google Cloud the key is a Secret Manager secret mounted as METERLINE_PORTAL_SIGNING_KEY;
embedded, an unset key is generated once into the data dir and kept there.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["signing_key"]

_KEY_FILE = "portal_signing_key"


def signing_key(secret: str | None, backend: str, data_dir: Path) -> bytes:
    """The portal's signing key: the configured secret (Secret Manager on GCP), or, embedded
    and unset, one generated once into `<data dir>/portal_signing_key` (0600) and reused, so
    links survive restarts. On GCP an unset key is a configuration error (a key generated per
    instance would make every other instance refuse the links this one signs)."""
    from meterline.config import ConfigError

    if secret is not None:
        if len(secret) < 32:
            raise ConfigError("METERLINE_PORTAL_SIGNING_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return secret.encode()
    if backend != "embedded":
        raise ConfigError("METERLINE_PORTAL_SIGNING_KEY is not set: on Google Cloud the portal function reads it from "
                          "Secret Manager (mount the secret as this variable)")
    path = data_dir / _KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name, then linked into place: a concurrent first start
        # either links first or reads the winner's complete key, never half of one.
        tmp = data_dir / f".{_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by other users: `chmod 600 {path}` (it signs portal links)")
    return path.read_bytes().strip()
