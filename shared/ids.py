"""Identifiers: a prefix and 130 bits of randomness in lower-case base32.

Lower-case letters and digits only, so that ``lnx_<random>`` with ``_`` turned into ``-`` is a
valid DNS label (host routing uses it as one).
"""

from __future__ import annotations

import base64
import re
import secrets

TENANT = "ten_"
CONTAINER = "ctr_"
SERVICE = "lnx_"
API_KEY_ID = "key_"
SHARE_LINK = "shl_"

_RANDOM_CHARS = 26  # 16 random bytes -> 26 base32 characters (130 bits)
_ID_RE = re.compile(r"^[a-z]{3}_[a-z2-7]{26}$")


def random_part(nbytes: int = 16) -> str:
    return base64.b32encode(secrets.token_bytes(nbytes)).decode("ascii").rstrip("=").lower()


def new_id(prefix: str) -> str:
    return prefix + random_part()


def looks_like(prefix: str, value: str) -> bool:
    """True when ``value`` has the shape of an id made by ``new_id(prefix)``."""
    return value.startswith(prefix) and bool(_ID_RE.match(value))


def new_key_id() -> str:
    """A signing key id: short, unique per service, carried inside tokens."""
    return random_part(10)


def new_secret() -> bytes:
    return secrets.token_bytes(32)


def new_api_key() -> str:
    """A tenant API key: shown once, stored only as a SHA-256 digest."""
    return "lxk_" + random_part(20)


def service_label(service_id: str) -> str:
    """The DNS label of a host-routed service: ``lnx_abc`` -> ``lnx-abc``."""
    return service_id.replace("_", "-")


def service_id_from_label(label: str) -> str | None:
    """Inverse of ``service_label``; None when ``label`` cannot be a service label."""
    candidate = label.lower().replace("-", "_", 1)
    return candidate if looks_like(SERVICE, candidate) else None
