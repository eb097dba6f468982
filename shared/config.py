"""Environment parsing shared by the control plane and the proxy.

Every process builds one frozen config object with ``from_env(environ)``; the helpers here are
the only code that reads variables, and each failure names the variable so that a bad
deployment stops at start-up with a message an operator can act on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """A configuration variable is missing or invalid; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def env_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    raw = env_str(environ, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {raw!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"from {minimum}" + (f" to {maximum}" if maximum is not None else " up")
        raise ConfigError(name, f"expected an integer {bound}, got {value}")
    return value


def env_float(environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env_str(environ, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"expected a number of seconds, got {raw!r}")
    if not value >= minimum:  # also rejects NaN
        raise ConfigError(name, f"expected a number >= {minimum}, got {raw!r}")
    return value


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env_str(environ, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected 1/0, true/false, yes/no or on/off, got {raw!r}")


def parse_hostport(name: str, raw: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 as ``[::1]:8080``); raise ConfigError naming ``name``."""
    host, sep, port_text = raw.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(name, f"expected host:port, got {raw!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(name, f"port out of range in {raw!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigError(name, f"expected host:port, got {raw!r}")
    return host, port


def env_hostport(environ: Mapping[str, str], name: str, default: str) -> tuple[str, int]:
    return parse_hostport(name, env_str(environ, name, default) or default)


def env_cidrs(
    environ: Mapping[str, str], name: str, default: tuple[str, ...]
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    raw = env_str(environ, name)
    items = default if raw is None else tuple(p.strip() for p in raw.split(",") if p.strip())
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(name, f"not a CIDR network: {item!r}")
    return tuple(networks)


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is and how keys are named: the part of the config both processes share."""

    url: str = "redis://127.0.0.1:6379/0"
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    cluster: bool = False
    key_prefix: str = "linx:"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RedisSettings:
        url = env_str(environ, "REDIS_URL", cls.url) or cls.url
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL", f"expected redis://, rediss:// or unix://, got {url!r}")
        sentinel_raw = env_str(environ, "LINX_REDIS_SENTINELS")
        sentinels: tuple[tuple[str, int], ...] = ()
        master = env_str(environ, "LINX_REDIS_SENTINEL_MASTER")
        if sentinel_raw:
            sentinels = tuple(
                parse_hostport("LINX_REDIS_SENTINELS", part.strip())
                for part in sentinel_raw.split(",")
                if part.strip()
            )
            if not master:
                raise ConfigError("LINX_REDIS_SENTINEL_MASTER", "required when LINX_REDIS_SENTINELS is set")
        cluster = env_bool(environ, "LINX_REDIS_CLUSTER", False)
        prefix = environ.get("LINX_KEY_PREFIX", cls.key_prefix)
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError("LINX_KEY_PREFIX", "must be non-empty and contain no white space")
        if cluster and not _has_hash_tag(prefix):
            raise ConfigError(
                "LINX_KEY_PREFIX",
                f"in Cluster mode the prefix must hold a hash tag such as '{{linx}}:', got {prefix!r}",
            )
        return cls(url, sentinels, master, cluster, prefix)


def _has_hash_tag(prefix: str) -> bool:
    start = prefix.find("{")
    end = prefix.find("}", start + 1)
    return start >= 0 and end > start + 1
