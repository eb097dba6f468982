"""The proxy's configuration: one frozen object, built once from the environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.config import (
    ConfigError,
    RedisSettings,
    env_cidrs,
    env_float,
    env_hostport,
    env_int,
    env_str,
    parse_hostport,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Loopback and private ranges. Link-local (169.254/16 with cloud metadata, fe80::/10) is absent
# on purpose: it is reachable only when an operator lists it.
DEFAULT_ALLOWED_NETWORKS = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "::1/128",
    "fc00::/7",
)


@dataclass(frozen=True)
class Option:
    """One environment variable the proxy reads, mirrored by a ``--flag`` of the same name."""

    env: str
    help: str
    default: str | None = None  # as the variable would spell it; None: unset


_NETWORKS_TEXT = ",".join(DEFAULT_ALLOWED_NETWORKS)
OPTIONS: tuple[Option, ...] = (
    Option("REDIS_URL", "Redis to use (redis://, rediss://, unix://)", "redis://127.0.0.1:6379/0"),
    Option("LINX_REDIS_SENTINELS", "Sentinel endpoints host:port,..."),
    Option("LINX_REDIS_SENTINEL_MASTER", "Sentinel master name"),
    Option("LINX_REDIS_CLUSTER", "1: REDIS_URL is a Redis Cluster seed node"),
    Option("LINX_KEY_PREFIX", "prefix of every Redis key and stream", "linx:"),
    Option("LINX_PROXY_LISTEN", "plain HTTP listener host:port", "0.0.0.0:8080"),
    Option("LINX_PROXY_TLS_LISTEN", "TLS listener host:port"),
    Option("LINX_TLS_CERT", "PEM certificate chain for the TLS listener"),
    Option("LINX_TLS_KEY", "PEM private key for the TLS listener"),
    Option("LINX_PROXY_ADMIN_LISTEN", "/healthz, /readyz and /metrics listener host:port", "127.0.0.1:9090"),
    Option("LINX_ALLOWED_TARGET_NETWORKS", "CIDRs the proxy may connect to", _NETWORKS_TEXT),
    Option("LINX_MAX_STALENESS_SECS", "sync age after which token services answer 503", "60"),
    Option("LINX_TRUSTED_PROXIES", "CIDRs of front proxies whose X-Forwarded-* are kept"),
    Option("LINX_HEAD_TIMEOUT_SECS", "absolute time to receive a request head", "10"),
    Option("LINX_IDLE_TIMEOUT_SECS", "idle keep-alive timeout", "75"),
    Option("LINX_CONNECT_TIMEOUT_SECS", "container connect timeout (then 503)", "5"),
    Option("LINX_RESPONSE_TIMEOUT_SECS", "container response-head timeout (then 504)", "300"),
    Option("LINX_MAX_HEAD_BYTES", "request head size limit (431)", "32768"),
    Option("LINX_MAX_HEADERS", "request header count limit (431)", "100"),
    Option("LINX_MAX_CONNECTIONS", "open client connections limit", "10000"),
    Option("LINX_PROBE_INTERVAL_SECS", "readiness re-probe interval", "10"),
    Option("LINX_DRAIN_SECS", "on SIGTERM, how long in-flight requests may finish", "30"),
    Option("LINX_SERVICE_DOMAIN", "domain under which host-routed services live"),
    Option("LINX_ACCESS_LOG", "JSON access log: - (stdout), off, or a file path", "-"),
    Option("LINX_PROXY_API_UPSTREAM", "relay /api/ to the control plane at host:port (one origin for both)"),
    Option(
        "LINX_UPSTREAM_MAX_IDLE",
        "idle keep-alive connections kept per container target (they expire after 30 s idle)",
        "1024",
    ),
)
# Defaults, declared once above: parsing and --help both read them from there.
_D: dict[str, str | None] = {o.env: o.default for o in OPTIONS}


def _float(environ: Mapping[str, str], env: str, minimum: float) -> float:
    return env_float(environ, env, float(_D[env]), minimum=minimum)  # type: ignore[arg-type]


def _int(environ: Mapping[str, str], env: str, minimum: int) -> int:
    return env_int(environ, env, int(_D[env]), minimum=minimum)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ProxyConfig:
    redis: RedisSettings = field(default_factory=RedisSettings)
    listen: tuple[str, int] = ("0.0.0.0", 8080)
    tls_listen: tuple[str, int] | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    admin_listen: tuple[str, int] = ("127.0.0.1", 9090)
    allowed_networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in DEFAULT_ALLOWED_NETWORKS)
    max_staleness: float = 60.0
    trusted_proxies: tuple[Network, ...] = ()
    head_timeout: float = 10.0
    idle_timeout: float = 75.0
    connect_timeout: float = 5.0
    response_timeout: float = 300.0
    max_head_bytes: int = 32768
    max_headers: int = 100
    max_connections: int = 10000
    probe_interval: float = 10.0
    drain_secs: float = 30.0
    service_domain: str | None = None
    access_log: str = "-"
    api_upstream: tuple[str, int] | None = None
    upstream_max_idle: int = 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ProxyConfig:
        """Parse and check every option; raise ConfigError naming the first bad variable."""
        tls_listen_raw = env_str(environ, "LINX_PROXY_TLS_LISTEN")
        tls_listen = parse_hostport("LINX_PROXY_TLS_LISTEN", tls_listen_raw) if tls_listen_raw else None
        tls_cert = env_str(environ, "LINX_TLS_CERT")
        tls_key = env_str(environ, "LINX_TLS_KEY")
        if tls_listen and not (tls_cert and tls_key):
            missing = "LINX_TLS_CERT" if not tls_cert else "LINX_TLS_KEY"
            raise ConfigError(missing, "required when LINX_PROXY_TLS_LISTEN is set")
        api_raw = env_str(environ, "LINX_PROXY_API_UPSTREAM")
        api_upstream = parse_hostport("LINX_PROXY_API_UPSTREAM", api_raw) if api_raw else None
        domain = env_str(environ, "LINX_SERVICE_DOMAIN")
        if domain is not None:
            domain = domain.lower().strip(".")
            if not domain or any(not part for part in domain.split(".")):
                raise ConfigError("LINX_SERVICE_DOMAIN", f"not a domain name: {domain!r}")
        return cls(
            redis=RedisSettings.from_env(environ),
            listen=env_hostport(environ, "LINX_PROXY_LISTEN", _D["LINX_PROXY_LISTEN"]),
            tls_listen=tls_listen,
            tls_cert=tls_cert,
            tls_key=tls_key,
            admin_listen=env_hostport(environ, "LINX_PROXY_ADMIN_LISTEN", _D["LINX_PROXY_ADMIN_LISTEN"]),
            allowed_networks=env_cidrs(environ, "LINX_ALLOWED_TARGET_NETWORKS", DEFAULT_ALLOWED_NETWORKS),
            max_staleness=_float(environ, "LINX_MAX_STALENESS_SECS", 0.1),
            trusted_proxies=env_cidrs(environ, "LINX_TRUSTED_PROXIES", ()),
            head_timeout=_float(environ, "LINX_HEAD_TIMEOUT_SECS", 0.01),
            idle_timeout=_float(environ, "LINX_IDLE_TIMEOUT_SECS", 0.01),
            connect_timeout=_float(environ, "LINX_CONNECT_TIMEOUT_SECS", 0.01),
            response_timeout=_float(environ, "LINX_RESPONSE_TIMEOUT_SECS", 0.01),
            max_head_bytes=_int(environ, "LINX_MAX_HEAD_BYTES", 256),
            max_headers=_int(environ, "LINX_MAX_HEADERS", 1),
            max_connections=_int(environ, "LINX_MAX_CONNECTIONS", 1),
            probe_interval=_float(environ, "LINX_PROBE_INTERVAL_SECS", 0.05),
            drain_secs=_float(environ, "LINX_DRAIN_SECS", 0.0),
            service_domain=domain,
            access_log=env_str(environ, "LINX_ACCESS_LOG", _D["LINX_ACCESS_LOG"]) or _D["LINX_ACCESS_LOG"],
            api_upstream=api_upstream,
            upstream_max_idle=_int(environ, "LINX_UPSTREAM_MAX_IDLE", 0),
        )


def flags_to_environ(argv: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """Overlay ``--linx-proxy-listen 0.0.0.0:80`` style flags (one per variable) on ``environ``.

    ``--redis-url`` mirrors REDIS_URL; ``--proxy-listen`` (the ``linx-`` part optional)
    mirrors LINX_PROXY_LISTEN. Unknown flags raise ConfigError.
    """
    by_flag: dict[str, str] = {}
    for opt in OPTIONS:
        flag = "--" + opt.env.lower().replace("_", "-")
        by_flag[flag] = opt.env
        if flag.startswith("--linx-"):
            by_flag["--" + flag[len("--linx-") :]] = opt.env
    merged = dict(environ)
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name not in by_flag:
            raise ConfigError(name, "unknown option")
        if not eq:
            if not args:
                raise ConfigError(name, "needs a value")
            value = args.pop(0)
        merged[by_flag[name]] = value
    return merged
