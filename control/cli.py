"""``linx``: the command line of Linx, for tenants and operators (a thin layer on ``Client``).

Tenants (``LINX_API_KEY``)::

    linx containers
    linx publish CONTAINER --port 7001 --name amp [--websockets] [--ttl 1h] [--public]
    linx list CONTAINER          linx show SERVICE          linx wait-ready SERVICE
    linx rotate SERVICE          linx delete SERVICE        linx patch SERVICE --ttl 2h
    linx links create|list|delete SERVICE ...

Operators (``LINX_ADMIN_TOKEN``)::

    linx admin tenant create|list|show ...      linx admin key create|revoke ...
    linx admin container register|patch|delete|show|list ...
    linx proxy status --admin-url http://127.0.0.1:9090

``LINX_API_URL`` (default ``http://127.0.0.1:8000``) says where the control plane is. Output
is a human-readable table; ``--json`` prints the API's JSON answer unchanged for scripts.
Exit status: 0 on success; 1 when the API answers an error (printed as
``error: <message> (<code>)`` on stderr), cannot be reached, or ``wait-ready`` gives up;
2 for a usage error (a bad option, a missing credential).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
import requests
from click.core import ParameterSource

from control.client import DEFAULT_TIMEOUT, Client, LinxError, connection_reason
from shared.records import (
    AUTH_MODES,
    CONTAINER_STATES,
    CORS_MODES,
    MAX_TTL_SECS,
    ROUTING_MODES,
    AuthMode,
    ContainerState,
    CorsMode,
    RoutingMode,
)

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_PROXY_ADMIN_URL = "http://127.0.0.1:9090"
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNIT_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# ------------------------------------------------------------------------------ plumbing
class Failure(click.ClickException):
    """A failure reported as ``error: <message>`` on stderr with exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _Group(click.Group):
    """Turns the client's errors into ``Failure`` for every command below it."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LinxError as exc:
            raise Failure(f"{exc.message} ({exc.code})")


@dataclass
class Settings:
    """What the root options say; builds one ``Client`` on first use."""

    api_url: str
    api_key: str | None = field(repr=False)
    admin_token: str | None = field(repr=False)
    timeout: float
    json: bool
    _client: Client | None = field(default=None, repr=False)

    def client(self, *, admin: bool = False) -> Client:
        if admin and not self.admin_token:
            raise click.UsageError("no admin token: set LINX_ADMIN_TOKEN or pass --admin-token")
        if not admin and not self.api_key:
            raise click.UsageError("no API key: set LINX_API_KEY or pass --api-key")
        if self._client is None:
            self._client = Client(self.api_url, self.api_key, self.admin_token, self.timeout)
            click.get_current_context().find_root().call_on_close(self._client.close)
        return self._client


def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer as is.")(fn)


def _wants_json(settings: Settings, as_json: bool) -> bool:
    return as_json or settings.json


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def parse_duration(text: str, *, allow_none: bool = False) -> int | None:
    """Seconds from ``3600``, ``90s``, ``30m``, ``1h``, ``1h30m``, ``7d``; ``none`` (no
    expiry) when ``allow_none``. Raises ``click.BadParameter``."""
    raw = text.strip().lower()
    if allow_none and raw in ("none", "never", "0"):
        return None
    if raw.isdigit():
        secs = int(raw)
    else:
        parts = _DURATION_PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise click.BadParameter(
                f"{text!r}: expected seconds or a duration such as 90s, 30m, 1h, 1h30m, 7d"
            )
        secs = sum(int(n) * _UNIT_SECS[u] for n, u in parts)
    if not 1 <= secs <= MAX_TTL_SECS:
        raise click.BadParameter(f"{text!r}: must be from 1 second to 365 days")
    return secs


class Duration(click.ParamType):
    """A TTL option: seconds or ``1h30m`` style; ``none`` too when ``allow_none``."""

    name = "DURATION"

    def __init__(self, *, allow_none: bool = False) -> None:
        self.allow_none = allow_none

    def convert(self, value: Any, param: Any, ctx: Any) -> int | None:
        if isinstance(value, int) or value is None:
            return value
        try:
            return parse_duration(str(value), allow_none=self.allow_none)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


# ----------------------------------------------------------------------------- printing
def _when(ts: int | None, empty: str = "-") -> str:
    if ts is None:
        return empty
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[str(h) for h in headers]] + [[_text(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)] + [row[-1]]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """``name  value`` lines, names padded to one width."""
    items = [(k, _text(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in items)


def _service_fields(s: dict) -> str:
    return fields(
        [
            ("service_id", s["service_id"]),
            ("name", s["name"]),
            ("container_id", s["container_id"]),
            ("target_port", s["target_port"]),
            ("status", s["status"]),
            ("auth_mode", s["auth_mode"]),
            ("routing", s.get("routing")),
            ("websockets", _yes(s["enable_websockets"])),
            ("cors_preflight", s.get("cors_preflight")),
            ("strip_prefix", _yes(s["strip_prefix"]) if "strip_prefix" in s else None),
            ("created_at", _when(s["created_at"])),
            ("expires_at", _when(s["expires_at"], "never")),
            ("public_url", s["public_url"]),
            ("websocket_url", s["websocket_url"]),
        ]
    )


def _container_fields(c: dict) -> str:
    return fields(
        [
            ("container_id", c["container_id"]),
            ("tenant_id", c["tenant_id"]),
            ("name", c["name"]),
            ("address", c["address"]),
            ("state", c["state"]),
            ("networking", _yes(c["networking_enabled"])),
            ("network_ready", _yes(c["network_ready"])),
            ("exec_ready", _yes(c["exec_ready"])),
            ("created_at", _when(c["created_at"])),
            ("updated_at", _when(c["updated_at"])),
        ]
    )


def _containers_table(containers: list[dict], with_tenant: bool = False) -> str:
    headers = ["CONTAINER", *(["TENANT"] if with_tenant else []), "NAME", "STATE", "ADDRESS", "NETWORKING"]
    rows = [
        [
            c["container_id"],
            *([c["tenant_id"]] if with_tenant else []),
            c["name"],
            c["state"],
            c["address"],
            "on, ready"
            if c["networking_enabled"] and c["network_ready"]
            else ("on, not ready" if c["networking_enabled"] else "off"),
        ]
        for c in containers
    ]
    return table(headers, rows)


def _show(settings: Settings, as_json: bool, value: Any, human: Callable[[Any], str]) -> None:
    if _wants_json(settings, as_json):
        _print_json(value)
    else:
        click.echo(human(value))


# ------------------------------------------------------------------------------- the root
@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--api-url",
    envvar="LINX_API_URL",
    default=DEFAULT_API_URL,
    show_default=True,
    metavar="URL",
    help="The control plane's base URL [env: LINX_API_URL].",
)
@click.option(
    "--api-key",
    envvar="LINX_API_KEY",
    metavar="KEY",
    help="Tenant API key [env: LINX_API_KEY; prefer it: command lines are visible to other users].",
)
@click.option(
    "--admin-token",
    envvar="LINX_ADMIN_TOKEN",
    metavar="TOKEN",
    help="Operator token for `linx admin` [env: LINX_ADMIN_TOKEN].",
)
@click.option(
    "--timeout",
    "http_timeout",
    envvar="LINX_HTTP_TIMEOUT",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to wait for each HTTP answer [env: LINX_HTTP_TIMEOUT].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (every command).")
@click.pass_context
def cli(
    ctx: click.Context,
    api_url: str,
    api_key: str | None,
    admin_token: str | None,
    http_timeout: float,
    as_json: bool,
) -> None:
    """Publish container ports at stable URLs with Linx, and operate it."""
    ctx.obj = Settings(api_url, api_key, admin_token, http_timeout, as_json)


# ------------------------------------------------------------------------- tenant commands
@cli.command("containers")
@json_option
@click.pass_obj
def containers_cmd(settings: Settings, as_json: bool) -> None:
    """List your containers."""
    items = settings.client().list_containers()
    _show(settings, as_json, {"containers": items}, lambda v: _containers_table(v["containers"]))


@cli.command("publish")
@click.argument("container_id", metavar="CONTAINER")
@click.option("--port", "target_port", type=click.IntRange(1, 65535), required=True, help="Container port.")
@click.option("--name", required=True, help="Service name, unique per container (a-z, 0-9, '-').")
@click.option("--websockets", is_flag=True, help="Allow WebSocket upgrades.")
@click.option("--ttl", type=Duration(), help="Expire after this long: 3600, 30m, 1h, 7d.")
@click.option("--public", is_flag=True, help="No token: anyone with the URL may open it.")
@click.option(
    "--routing", type=click.Choice(ROUTING_MODES), help="Default: the deployment's LINX_DEFAULT_ROUTING."
)
@click.option(
    "--cors-preflight",
    type=click.Choice(CORS_MODES),
    help="passthrough: CORS preflights reach the app without a token.",
)
@click.option(
    "--keep-prefix",
    is_flag=True,
    help="Path routing: the app gets the whole /linx/<id>/... path (run it with that base URL).",
)
@json_option
@click.pass_obj
def publish_cmd(
    settings: Settings,
    container_id: str,
    target_port: int,
    name: str,
    websockets: bool,
    ttl: int | None,
    public: bool,
    routing: RoutingMode | None,
    cors_preflight: CorsMode | None,
    keep_prefix: bool,
    as_json: bool,
) -> None:
    """Publish PORT of CONTAINER; prints the service and its public URL."""
    service = settings.client().publish(
        container_id,
        name,
        target_port,
        enable_websockets=True if websockets else None,
        auth_mode="public" if public else None,
        ttl_secs=ttl,
        routing=routing,
        cors_preflight=cors_preflight,
        strip_prefix=False if keep_prefix else None,
    )
    _show(settings, as_json, service, _service_fields)


@cli.command("list")
@click.argument("container_id", metavar="CONTAINER")
@json_option
@click.pass_obj
def list_cmd(settings: Settings, container_id: str, as_json: bool) -> None:
    """List the services published on CONTAINER."""
    services = settings.client().list_services(container_id)

    def human(value: dict) -> str:
        rows = [
            [
                s["service_id"],
                s["name"],
                s["target_port"],
                s["status"],
                s["auth_mode"],
                _when(s["expires_at"], "never"),
                s["public_url"],
            ]
            for s in value["services"]
        ]
        return table(["SERVICE", "NAME", "PORT", "STATUS", "AUTH", "EXPIRES", "PUBLIC URL"], rows)

    _show(settings, as_json, {"services": services}, human)


@cli.command("show")
@click.argument("service_id", metavar="SERVICE")
@json_option
@click.pass_obj
def show_cmd(settings: Settings, service_id: str, as_json: bool) -> None:
    """Show a service, its status and URLs."""
    _show(settings, as_json, settings.client().get_service(service_id), _service_fields)


@cli.command("rotate")
@click.argument("service_id", metavar="SERVICE")
@json_option
@click.pass_obj
def rotate_cmd(settings: Settings, service_id: str, as_json: bool) -> None:
    """Sign a new token: every URL and cookie issued before stops working."""
    service = settings.client().rotate_token(service_id)
    _show(settings, as_json, service, _service_fields)


@cli.command("patch")
@click.argument("service_id", metavar="SERVICE")
@click.option("--ttl", type=Duration(allow_none=True), default=None, help="New TTL from now, or none.")
@click.option("--auth-mode", type=click.Choice(AUTH_MODES), help="public: no token needed.")
@click.option("--cors-preflight", type=click.Choice(CORS_MODES))
@click.option(
    "--keep-prefix/--strip-prefix",
    "keep_prefix",
    default=None,
    help="Path routing: send the app the whole /linx/<id>/... path, or strip it (the default).",
)
@json_option
@click.pass_context
def patch_cmd(
    ctx: click.Context,
    service_id: str,
    ttl: int | None,
    auth_mode: AuthMode | None,
    cors_preflight: CorsMode | None,
    keep_prefix: bool | None,
    as_json: bool,
) -> None:
    """Change a service's TTL, auth mode, CORS preflight handling or prefix handling."""
    settings: Settings = ctx.obj
    changes: dict[str, Any] = {}
    if ctx.get_parameter_source("ttl") is not ParameterSource.DEFAULT:
        changes["ttl_secs"] = ttl
    if auth_mode is not None:
        changes["auth_mode"] = auth_mode
    if cors_preflight is not None:
        changes["cors_preflight"] = cors_preflight
    if keep_prefix is not None:
        changes["strip_prefix"] = not keep_prefix
    if not changes:
        raise click.UsageError(
            "nothing to change: give --ttl, --auth-mode, --cors-preflight or --keep-prefix/--strip-prefix"
        )
    _show(settings, as_json, settings.client().patch_service(service_id, **changes), _service_fields)


@cli.command("delete")
@click.argument("service_id", metavar="SERVICE")
@json_option
@click.pass_obj
def delete_cmd(settings: Settings, service_id: str, as_json: bool) -> None:
    """Delete a service: its URLs stop working at once."""
    settings.client().delete_service(service_id)
    if not _wants_json(settings, as_json):
        click.echo(f"deleted {service_id}")


@cli.command("wait-ready")
@click.argument("service_id", metavar="SERVICE")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True, help="Seconds.")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=0.25, show_default=True, help="Poll interval."
)
@click.option(
    "--keep-waiting/--fail-fast",
    default=True,
    show_default=True,
    help="Keep polling through target_unreachable (an app still starting) until the timeout, "
    "or fail at once.",
)
@json_option
@click.pass_obj
def wait_ready_cmd(
    settings: Settings, service_id: str, timeout: float, interval: float, keep_waiting: bool, as_json: bool
) -> None:
    """Block until SERVICE is ready (a proxy reached its target).

    Waits through pending and target_unreachable (unless --fail-fast); fails (exit 1) at once
    when the service is expired, in error or deleted, and when it is not ready within --timeout.
    """
    service = settings.client().wait_ready(service_id, timeout, interval=interval, keep_waiting=keep_waiting)
    if _wants_json(settings, as_json):
        _print_json(service)
    else:
        click.echo(f"ready: {service['public_url']}")


# ----------------------------------------------------------------------------- share links
@cli.group("links", cls=_Group)
def links_group() -> None:
    """Share links of a service (extra URLs with their own token and expiry)."""


@links_group.command("create")
@click.argument("service_id", metavar="SERVICE")
@click.option("--ttl", type=Duration(), help="Expire after this long (default: with the service).")
@click.option("--label", help="A note to recognise the link by.")
@json_option
@click.pass_obj
def links_create_cmd(
    settings: Settings, service_id: str, ttl: int | None, label: str | None, as_json: bool
) -> None:
    """Create a share link; its URL is shown only now."""
    link = settings.client().create_share_link(service_id, ttl_secs=ttl, label=label)
    _show(
        settings,
        as_json,
        link,
        lambda v: fields(
            [
                ("link_id", v["link_id"]),
                ("label", v["label"]),
                ("expires_at", _when(v["expires_at"], "with the service")),
                ("url", v["url"]),
            ]
        ),
    )


@links_group.command("list")
@click.argument("service_id", metavar="SERVICE")
@json_option
@click.pass_obj
def links_list_cmd(settings: Settings, service_id: str, as_json: bool) -> None:
    """List a service's share links."""
    links = settings.client().list_share_links(service_id)

    def human(value: dict) -> str:
        rows = [
            [
                ln["link_id"],
                ln["label"],
                _when(ln["created_at"]),
                _when(ln["expires_at"], "with the service"),
                _when(ln["last_used_at"], "never"),
            ]
            for ln in value["share_links"]
        ]
        return table(["LINK", "LABEL", "CREATED", "EXPIRES", "LAST USED"], rows)

    _show(settings, as_json, {"share_links": links}, human)


@links_group.command("delete")
@click.argument("service_id", metavar="SERVICE")
@click.argument("link_id", metavar="LINK")
@json_option
@click.pass_obj
def links_delete_cmd(settings: Settings, service_id: str, link_id: str, as_json: bool) -> None:
    """Delete a share link: its URL and cookies stop working."""
    settings.client().delete_share_link(service_id, link_id)
    if not _wants_json(settings, as_json):
        click.echo(f"deleted {link_id}")


# ------------------------------------------------------------------------- admin commands
@cli.group("admin", cls=_Group)
def admin_group() -> None:
    """Operator commands (need LINX_ADMIN_TOKEN)."""


@admin_group.group("tenant", cls=_Group)
def tenant_group() -> None:
    """Tenants."""


@admin_group.command("proxies")
@json_option
@click.pass_obj
def admin_proxies_cmd(settings: Settings, as_json: bool) -> None:
    """List the live proxy replicas (each writes a heartbeat every few seconds)."""
    proxies = settings.client(admin=True).list_proxies()
    _show(
        settings,
        as_json,
        {"proxies": proxies},
        lambda v: table(
            ["PROXY", "HOST", "VERSION", "ROUTES", "CONNECTIONS", "SYNC LAG", "STARTED", "LAST SEEN"],
            [
                [
                    p["proxy_id"],
                    p["host"],
                    p["version"],
                    p["routes"],
                    p["open_connections"],
                    "-" if p["sync_lag_secs"] is None else f"{p['sync_lag_secs']:.1f}s",
                    _when(p["started_at"]),
                    _when(p["last_seen_at"]),
                ]
                for p in v["proxies"]
            ],
        ),
    )


@tenant_group.command("create")
@click.argument("name")
@json_option
@click.pass_obj
def tenant_create_cmd(settings: Settings, name: str, as_json: bool) -> None:
    """Create a tenant; prints its first API key (shown only now)."""
    tenant = settings.client(admin=True).create_tenant(name)
    _show(
        settings,
        as_json,
        tenant,
        lambda t: fields((k, t[k]) for k in ("tenant_id", "name", "key_id", "api_key")),
    )
    if not _wants_json(settings, as_json):
        click.echo("the API key is shown only once: store it now", err=True)


@tenant_group.command("list")
@json_option
@click.pass_obj
def tenant_list_cmd(settings: Settings, as_json: bool) -> None:
    """List tenants."""
    tenants = settings.client(admin=True).list_tenants()
    _show(
        settings,
        as_json,
        {"tenants": tenants},
        lambda v: table(
            ["TENANT", "NAME", "CREATED", "KEYS"],
            [
                [t["tenant_id"], t["name"], _when(t["created_at"]), ", ".join(t.get("key_ids", []))]
                for t in v["tenants"]
            ],
        ),
    )


@tenant_group.command("show")
@click.argument("tenant_id", metavar="TENANT")
@json_option
@click.pass_obj
def tenant_show_cmd(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """Show a tenant and its key ids."""
    tenant = settings.client(admin=True).get_tenant(tenant_id)
    _show(
        settings,
        as_json,
        tenant,
        lambda t: fields(
            [
                ("tenant_id", t["tenant_id"]),
                ("name", t["name"]),
                ("created_at", _when(t["created_at"])),
                ("key_ids", ", ".join(t.get("key_ids", []))),
            ]
        ),
    )


@admin_group.group("key", cls=_Group)
def key_group() -> None:
    """Tenants' API keys."""


@key_group.command("create")
@click.argument("tenant_id", metavar="TENANT")
@json_option
@click.pass_obj
def key_create_cmd(settings: Settings, tenant_id: str, as_json: bool) -> None:
    """Create another API key for TENANT (shown only now)."""
    key = settings.client(admin=True).create_key(tenant_id)
    _show(settings, as_json, key, lambda k: fields((n, k[n]) for n in ("key_id", "api_key")))
    if not _wants_json(settings, as_json):
        click.echo("the API key is shown only once: store it now", err=True)


@key_group.command("revoke")
@click.argument("tenant_id", metavar="TENANT")
@click.argument("key_id", metavar="KEY_ID")
@json_option
@click.pass_obj
def key_revoke_cmd(settings: Settings, tenant_id: str, key_id: str, as_json: bool) -> None:
    """Revoke an API key; effective immediately."""
    settings.client(admin=True).revoke_key(tenant_id, key_id)
    if not _wants_json(settings, as_json):
        click.echo(f"revoked {key_id}")


@admin_group.group("container", cls=_Group)
def container_group() -> None:
    """Containers (as the container runtime registers them)."""


def _container_flags(fn: Callable) -> Callable:
    for decorator in reversed(
        [
            click.option(
                "--networking/--no-networking", "networking_enabled", default=None, help="Networking enabled."
            ),
            click.option("--network-ready/--no-network-ready", default=None, help="Network set up."),
            click.option("--exec-ready/--no-exec-ready", default=None, help="Exec available."),
        ]
    ):
        fn = decorator(fn)
    return fn


@container_group.command("register")
@click.option("--tenant", "tenant_id", required=True, help="Owner tenant id.")
@click.option("--address", required=True, help="IPv4 or IPv6 address the container listens on.")
@click.option("--name", help="Display name.")
@click.option("--id", "container_id", help="Container id (default: generated ctr_...).")
@click.option("--state", type=click.Choice(CONTAINER_STATES), default="running", show_default=True)
@_container_flags
@json_option
@click.pass_obj
def container_register_cmd(
    settings: Settings,
    tenant_id: str,
    address: str,
    name: str | None,
    container_id: str | None,
    state: ContainerState,
    networking_enabled: bool | None,
    network_ready: bool | None,
    exec_ready: bool | None,
    as_json: bool,
) -> None:
    """Register a container (flags default to enabled/ready)."""
    container = settings.client(admin=True).register_container(
        tenant_id,
        address,
        name=name,
        container_id=container_id,
        state=state,
        networking_enabled=networking_enabled is not False,
        network_ready=network_ready is not False,
        exec_ready=exec_ready is not False,
    )
    _show(settings, as_json, container, _container_fields)


@container_group.command("patch")
@click.argument("container_id", metavar="CONTAINER")
@click.option("--state", type=click.Choice(CONTAINER_STATES))
@click.option("--address", help="New address.")
@_container_flags
@json_option
@click.pass_obj
def container_patch_cmd(
    settings: Settings,
    container_id: str,
    state: ContainerState | None,
    address: str | None,
    networking_enabled: bool | None,
    network_ready: bool | None,
    exec_ready: bool | None,
    as_json: bool,
) -> None:
    """Change a container's state, address or readiness; proxies follow within a second."""
    given = {
        "state": state,
        "address": address,
        "networking_enabled": networking_enabled,
        "network_ready": network_ready,
        "exec_ready": exec_ready,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        raise click.UsageError("nothing to change: give --state, --address or a readiness flag")
    container = settings.client(admin=True).patch_container(container_id, **changes)
    _show(settings, as_json, container, _container_fields)


@container_group.command("delete")
@click.argument("container_id", metavar="CONTAINER")
@json_option
@click.pass_obj
def container_delete_cmd(settings: Settings, container_id: str, as_json: bool) -> None:
    """Delete a container and every service published on it."""
    settings.client(admin=True).delete_container(container_id)
    if not _wants_json(settings, as_json):
        click.echo(f"deleted {container_id}")


@container_group.command("show")
@click.argument("container_id", metavar="CONTAINER")
@json_option
@click.pass_obj
def container_show_cmd(settings: Settings, container_id: str, as_json: bool) -> None:
    """Show any tenant's container."""
    _show(settings, as_json, settings.client(admin=True).admin_get_container(container_id), _container_fields)


@container_group.command("list")
@click.option("--tenant", "tenant_id", help="Only this tenant's containers.")
@json_option
@click.pass_obj
def container_list_cmd(settings: Settings, tenant_id: str | None, as_json: bool) -> None:
    """List every container (or one tenant's)."""
    items = settings.client(admin=True).admin_list_containers(tenant_id)
    _show(
        settings,
        as_json,
        {"containers": items},
        lambda v: _containers_table(v["containers"], with_tenant=True),
    )


# ------------------------------------------------------------------------------ the proxy
@cli.group("proxy", cls=_Group)
def proxy_group() -> None:
    """The proxy daemon's operational endpoint."""


# Metrics worth a glance, by family name (see dataplane/metrics.py).
_PROXY_METRICS = (
    ("linx_proxy_open_connections", "open connections"),
    ("linx_proxy_open_websockets", "open websockets"),
    ("linx_proxy_sync_lag_seconds", "sync lag (s)"),
    ("linx_proxy_full_syncs", "full syncs"),
    ("linx_proxy_requests", "requests"),
)


def _metric_values(text: str) -> dict[str, float]:
    """Each family's value summed over its labels (counters: their ``_total`` samples)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        samples = [s for s in family.samples if s.name in (family.name, family.name + "_total")]
        if samples:
            values[family.name] = sum(s.value for s in samples)
    return values


@proxy_group.command("status")
@click.option(
    "--admin-url",
    envvar="LINX_PROXY_ADMIN_URL",
    default=DEFAULT_PROXY_ADMIN_URL,
    show_default=True,
    help="The proxy's LINX_PROXY_ADMIN_LISTEN as a URL [env: LINX_PROXY_ADMIN_URL].",
)
@json_option
@click.pass_obj
def proxy_status_cmd(settings: Settings, admin_url: str, as_json: bool) -> None:
    """Readiness and a few metrics of one proxy; exit 1 when it is not ready."""
    base = admin_url.rstrip("/")
    try:
        with requests.Session() as http:
            ready = http.get(base + "/readyz", timeout=settings.timeout)
            metrics = http.get(base + "/metrics", timeout=settings.timeout)
    except requests.RequestException as exc:
        raise Failure(
            f"cannot reach the proxy admin endpoint at {base}: {connection_reason(exc)} (connection_failed)"
        )
    try:
        readyz = ready.json()
    except ValueError:
        raise Failure(f"{base}/readyz answered HTTP {ready.status_code} without JSON (invalid_response)")
    values = _metric_values(metrics.text) if metrics.status_code == 200 else {}
    is_ready = ready.status_code == 200
    if _wants_json(settings, as_json):
        _print_json({"admin_url": base, "ready": is_ready, "readyz": readyz, "metrics": values})
    else:
        rows = [("proxy", base), ("ready", _yes(is_ready))]
        rows += [(k, _yes(v) if isinstance(v, bool) else v) for k, v in readyz.items() if k != "status"]
        rows += [(label, _number(values[name])) for name, label in _PROXY_METRICS if name in values]
        click.echo(fields(rows))
    if not is_ready:
        raise Failure(f"the proxy at {base} is not ready ({readyz.get('status', ready.status_code)})")


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``linx``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="linx")


if __name__ == "__main__":
    main()
