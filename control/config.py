"""The control plane's configuration: one frozen object, built once from the environment.

``ControlConfig.from_env`` is the only code of the control plane that reads ``os.environ``.
Each option is declared once here, with its default; a missing or invalid value raises
``shared.config.ConfigError`` naming the variable, so gunicorn stops with a boot error instead
of restarting workers forever.

| variable | default | meaning |
| --- | --- | --- |
| ``LINX_ADMIN_TOKEN`` | required | bearer token of ``/api/admin/*`` |
| ``APP_BASE_URL`` | unset | ``http(s)://host[:port]``: base of every ``public_url`` |
| ``BACKEND_DOMAIN`` | unset | ``host[:port]``: base ``https://<it>`` when APP_BASE_URL is unset |
| ``LINX_EXPIRED_RETENTION_SECS`` | 86400 | how long an expired service stays readable |
| ``LINX_SERVICE_DOMAIN`` | unset | domain of host-routed services (``<label>.<domain>``) |
| ``LINX_DEFAULT_ROUTING`` | path | routing of a service created without ``routing`` |
| ``REDIS_URL``, ``LINX_REDIS_*``, ``LINX_KEY_PREFIX`` | see ``shared.config`` | Redis |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from control.urls import HOST_RE
from shared.config import ConfigError, RedisSettings, env_int, env_str
from shared.records import ROUTING_MODES

DEFAULT_RETENTION_SECS = 86_400
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_SWEEP_INTERVAL_SECS = 5.0

_DOMAIN_RE = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ControlConfig:
    """Everything the control plane needs to know at start; immutable afterwards."""

    admin_token: str
    redis: RedisSettings = field(default_factory=RedisSettings)
    app_base_url: str | None = None
    backend_domain: str | None = None
    expired_retention_secs: int = DEFAULT_RETENTION_SECS
    service_domain: str | None = None
    default_routing: str = "path"
    max_body_bytes: int = MAX_BODY_BYTES
    # How often (at most) each worker removes services whose retention has passed. Reads hide
    # such services anyway, so this bounds only how long their keys linger.
    sweep_interval_secs: float = DEFAULT_SWEEP_INTERVAL_SECS
    # A thread per process removes them on its own clock too (control.sweeper); tests of
    # the app with a fake clock turn it off.
    background_sweep: bool = True

    def __post_init__(self) -> None:
        if not self.admin_token:
            raise ConfigError("LINX_ADMIN_TOKEN", "required: the bearer token of /api/admin/*")
        if self.default_routing not in ROUTING_MODES:
            raise ConfigError("LINX_DEFAULT_ROUTING", f"expected path or host, got {self.default_routing!r}")
        if self.default_routing == "host" and not self.service_domain:
            raise ConfigError("LINX_DEFAULT_ROUTING", "host routing needs LINX_SERVICE_DOMAIN")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ControlConfig:
        """Parse ``environ`` (default: the process environment). Raises ConfigError."""
        env = os.environ if environ is None else environ
        admin_token = env_str(env, "LINX_ADMIN_TOKEN")
        if admin_token is None:
            raise ConfigError("LINX_ADMIN_TOKEN", "required: the bearer token of /api/admin/*")
        return cls(
            admin_token=admin_token,
            redis=RedisSettings.from_env(env),
            app_base_url=parse_base_url("APP_BASE_URL", env_str(env, "APP_BASE_URL")),
            backend_domain=_parse_backend_domain(env_str(env, "BACKEND_DOMAIN")),
            expired_retention_secs=env_int(
                env, "LINX_EXPIRED_RETENTION_SECS", DEFAULT_RETENTION_SECS, minimum=0
            ),
            service_domain=_parse_service_domain(env_str(env, "LINX_SERVICE_DOMAIN")),
            default_routing=(env_str(env, "LINX_DEFAULT_ROUTING", "path") or "path").lower(),
        )


def parse_base_url(variable: str, raw: str | None) -> str | None:
    """``http(s)://host[:port]`` without a trailing slash; ConfigError naming ``variable``."""
    if raw is None:
        return None
    parts = urlsplit(raw.rstrip("/"))
    try:
        parts.port  # noqa: B018 - raises ValueError when out of range
    except ValueError:
        raise ConfigError(variable, f"port out of range in {raw!r}")
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.netloc
        or not HOST_RE.fullmatch(parts.netloc)
        or parts.path
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(variable, f"expected http(s)://host[:port], got {raw!r}")
    return f"{parts.scheme.lower()}://{parts.netloc}"


def _parse_backend_domain(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not HOST_RE.fullmatch(raw) or not _port_ok(raw):
        raise ConfigError("BACKEND_DOMAIN", f"expected a host name such as api.example.com, got {raw!r}")
    return raw


def _port_ok(authority: str) -> bool:
    _, sep, port = authority.rpartition(":")
    return not sep or authority.endswith("]") or int(port) <= 65535


def _parse_service_domain(raw: str | None) -> str | None:
    if raw is None:
        return None
    domain = raw.lower().strip(".")
    if not _DOMAIN_RE.fullmatch(domain) or len(domain) > 253 - 31:
        raise ConfigError(
            "LINX_SERVICE_DOMAIN", f"expected a DNS domain such as svc.example.com, got {raw!r}"
        )
    return domain
