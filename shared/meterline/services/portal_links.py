"""Portal links: an HMAC-SHA256 token that scopes one customer until an expiry.

The portal's API signs one per call (`PortalService.issue_link`); the usage page and its data
accept nothing else. The key comes from the configuration or the data dir
(`adapters/embedded/keyfile.py`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meterline.core.errors import Forbidden, Unauthenticated

__all__ = ["LinkSigner", "PortalLink"]

# token = "mlp1." b64url(customer id) "." expiry (unix seconds) "." b64url(HMAC-SHA256(key, context + the part before))
#
# The customer id travels inside the signed part, so the token alone says whom it is for: a
# customer id in the URL is only compared with it, and a mismatch is refused (it can narrow,
# never widen). The signature is compared in constant time before anything else is trusted,
# and the expiry only then, so a forged token learns nothing from timing or from the answer.

_TOKEN_VERSION = "mlp1"
_CONTEXT = b"meterline portal link\n"  # domain separation: this key signs nothing else
_MAX_TOKEN_CHARS = 2048


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PortalLink:
    token: str
    customer_external_id: str
    expires_at: datetime


class LinkSigner:
    def __init__(self, key: bytes, lifetime: timedelta):
        if len(key) < 32:
            raise ValueError("the portal signing key must be at least 32 bytes")
        self._key = key
        self.lifetime = lifetime

    def _signature(self, signed: str) -> str:
        return _b64(hmac.new(self._key, _CONTEXT + signed.encode("ascii"), hashlib.sha256).digest())

    def issue(self, customer_external_id: str, now: datetime) -> PortalLink:
        # Rounded up to the second: a link is never valid for less than its lifetime.
        expires = int((now + self.lifetime).timestamp()) + 1
        signed = f"{_TOKEN_VERSION}.{_b64(customer_external_id.encode())}.{expires}"
        return PortalLink(f"{signed}.{self._signature(signed)}", customer_external_id,
                          datetime.fromtimestamp(expires, UTC))

    def verify(self, token: str | None, now: datetime) -> str:
        """The customer the token was issued for; Unauthenticated if it is missing, malformed,
        tampered with or expired (one answer for all: a prober learns nothing)."""
        if not token or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            raise Unauthenticated()
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _TOKEN_VERSION:
            raise Unauthenticated()
        signed, given = token.rpartition(".")[0], parts[3]
        # Compared as canonical text, not decoded bytes: base64 decoders accept several spellings
        # of the same bytes, and a changed character must never pass.
        if not hmac.compare_digest(self._signature(signed).encode(), given.encode()):
            raise Unauthenticated()
        expires = parts[2]
        if not (expires.isdigit() and len(expires) <= 12) or int(expires) <= now.timestamp():
            raise Unauthenticated()
        return _unb64(parts[1]).decode()

    def authorize(self, token: str | None, customer_external_id: str, now: datetime) -> str:
        """The token's customer, which must be `customer_external_id` (Forbidden otherwise)."""
        granted = self.verify(token, now)
        if not hmac.compare_digest(granted.encode(), customer_external_id.encode()):
            raise Forbidden()
        return granted
