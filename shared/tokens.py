"""Access tokens: pure signing and verification, no I/O and no clock of their own.

A token is ``v1.<key id>.<signature>``: URL-safe, about 60 characters. The signature is
HMAC-SHA-256 under a per-service secret over the service id and the key id, so a token is
bound to one service and one key; rotating the key (a new key id and secret) invalidates
every earlier token. Expiry belongs to the key record (the service's own expiry, or a share
link's), never to the token text, so extending a service's TTL keeps its URLs working.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

VERSION = "v1"
MAX_TOKEN_LENGTH = 256
_DOMAIN = b"linx-token/v1\x00"
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key a service accepts tokens for. ``expires_at`` None: lives as long as the service."""

    kid: str
    secret: bytes
    expires_at: int | None = None


class Verdict(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"  # malformed, forged, another service's, or an unknown (rotated-out) key
    EXPIRED = "expired"  # well signed, but its key's own expiry has passed


@dataclass(frozen=True, slots=True)
class Verification:
    verdict: Verdict
    kid: str | None = None


INVALID = Verification(Verdict.INVALID)


def _signature(secret: bytes, service_id: str, kid: str) -> str:
    mac = hmac.new(secret, _DOMAIN + service_id.encode() + b"\x00" + kid.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


def sign(service_id: str, key: SigningKey) -> str:
    """The token for ``service_id`` under ``key``. Deterministic: same inputs, same token."""
    return f"{VERSION}.{key.kid}.{_signature(key.secret, service_id, key.kid)}"


def verify(token: str, service_id: str, keys: Mapping[str, SigningKey], now: float) -> Verification:
    """Check ``token`` for ``service_id`` against the keys the service accepts at ``now``.

    The signature is compared in constant time. The key id is looked up first (it is not
    secret: it is printed in the token), then the full signature is compared.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH or not _ALLOWED.issuperset(token):
        return INVALID
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        return INVALID
    key = keys.get(parts[1])
    if key is None:
        return INVALID
    expected = _signature(key.secret, service_id, key.kid)
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii")):
        return INVALID
    if key.expires_at is not None and now >= key.expires_at:
        return Verification(Verdict.EXPIRED, key.kid)
    return Verification(Verdict.VALID, key.kid)


def api_key_digest(api_key: str) -> str:
    """How a tenant API key is stored: a SHA-256 digest (the key itself has 100+ random bits)."""
    return hashlib.sha256(api_key.encode("utf-8", "surrogatepass")).hexdigest()
