"""The ``linx`` command line and the Python client, against the real control plane under gunicorn.

The CLI runs in-process through click's ``CliRunner`` with the environment an operator or a
tenant would set (``LINX_API_URL``, ``LINX_API_KEY``, ``LINX_ADMIN_TOKEN``); what it prints
is compared with what the API answers to a plain HTTP client.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import threading
import tomllib

import click
import pytest
from click.testing import CliRunner

from control.cli import cli, main, parse_duration, table
from control.client import (
    Client,
    LinxApiError,
    LinxConnectionError,
    LinxCredentialsError,
    LinxNotReadyError,
)
from deploy.redis_process import free_port
from tests.helpers.procs import ADMIN_TOKEN, ROOT, Api, ControlPlane, Proxy, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"cli{secrets.token_hex(3)}:"


@pytest.fixture(scope="module")
def control(redis_server, prefix):
    plane = ControlPlane(redis_server.url, prefix, APP_BASE_URL="https://linx.example.test")
    try:
        yield plane.wait_ready()
    finally:
        plane.stop()


@pytest.fixture
def proxy(redis_server, prefix, control):
    """A proxy on the control plane's Redis and prefix: it probes targets, so statuses move."""
    daemon = Proxy(redis_server.url, prefix, LINX_PROBE_INTERVAL_SECS="0.2")
    try:
        yield daemon.wait_ready()
    finally:
        daemon.stop()


@pytest.fixture
def api(control) -> Api:
    return Api(control.url)


class Linx:
    """``linx ...`` as a user with the given credentials would run it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, key: str | None = None, admin: bool = False, expect: int | None = 0):
        env = {
            "LINX_API_URL": self.url,
            "LINX_API_KEY": key,
            "LINX_ADMIN_TOKEN": ADMIN_TOKEN if admin else None,
            "LINX_HTTP_TIMEOUT": None,
        }
        result = self.runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, (args, result.exit_code, result.stdout, result.stderr)
        return result

    def json(self, *args: str, **kw):
        return json.loads(self(*args, "--json", **kw).stdout)


@pytest.fixture
def linx(control) -> Linx:
    return Linx(control.url)


@pytest.fixture
def tenant(linx):
    """A fresh tenant (made with the CLI) and a running container of it on loopback."""
    created = linx.json("admin", "tenant", "create", "t" + secrets.token_hex(3), admin=True)
    container = linx.json(
        "admin",
        "container",
        "register",
        "--tenant",
        created["tenant_id"],
        "--address",
        "127.0.0.1",
        admin=True,
    )
    return created, container


def _fields(output: str) -> dict[str, str]:
    """``name  value`` lines as a dict."""
    return dict(
        line.split(None, 1) if " " in line.strip() else (line.strip(), "") for line in output.splitlines()
    )


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


# ---------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize(
    ("text", "secs"),
    [
        ("3600", 3600),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("1h30m", 5400),
        ("7d", 604800),
        (" 2H ", 7200),
    ],
)
def test_durations(text, secs):
    assert parse_duration(text) == secs


@pytest.mark.parametrize("text", ["", "1x", "h", "1h 30m", "-5", "0", "366d", "1.5h", "none"])
def test_bad_durations(text):
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_none_duration_only_where_allowed():
    assert parse_duration("none", allow_none=True) is None
    assert parse_duration("30m", allow_none=True) == 1800


def test_table_aligns_columns_and_shows_missing_values_as_dashes():
    assert table(["A", "LONGER"], [["x", None], ["yyyy", "z"]]).splitlines() == [
        "A     LONGER",
        "x     -",
        "yyyy  z",
    ]


def test_console_script(capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["linx"] == "control.cli:main"
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "publish" in capsys.readouterr().out
    module = subprocess.run(
        [sys.executable, "-m", "control.cli", "wait-ready", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert module.returncode == 0 and "--fail-fast" in module.stdout


# ------------------------------------------------------------------------- tenant commands
def test_publish_list_show_rotate_delete(linx, api, tenant):
    created, container = tenant
    key, cid = created["api_key"], container["container_id"]

    out = linx(
        "publish", cid, "--port", "7001", "--name", "amp", "--websockets", "--ttl", "1h", key=key
    ).stdout
    listed = api.call("GET", f"/api/containers/{cid}/services", key, expect=200).json()["services"]
    assert len(listed) == 1
    service = listed[0]
    sid = service["service_id"]
    assert service["name"] == "amp" and service["target_port"] == 7001
    assert service["enable_websockets"] is True and service["auth_mode"] == "service_token"
    assert service["expires_at"] - service["created_at"] == 3600
    assert sid in out and service["public_url"] in out and service["websocket_url"] in out

    table_out = linx("list", cid, key=key).stdout.splitlines()
    assert table_out[0].split() == ["SERVICE", "NAME", "PORT", "STATUS", "AUTH", "EXPIRES", "PUBLIC", "URL"]
    row = table_out[1].split()
    assert row[:5] == [sid, "amp", "7001", "pending", "service_token"]
    assert row[-1] == service["public_url"]

    shown = _fields(linx("show", sid, key=key).stdout)
    assert shown["service_id"] == sid and shown["status"] == "pending"
    assert shown["public_url"] == service["public_url"]
    assert shown["expires_at"].endswith("Z") and shown["websockets"] == "yes"

    rotated = linx.json("rotate", sid, key=key)
    assert rotated["public_url"] != service["public_url"]
    assert rotated == api.call("GET", f"/api/services/{sid}", key, expect=200).json()
    assert linx("rotate", sid, key=key).stdout.count("public_url") == 1

    assert linx("delete", sid, key=key).stdout.strip() == f"deleted {sid}"
    gone = linx("show", sid, key=key, expect=1)
    assert gone.stdout == ""
    assert gone.stderr.strip() == "error: service not found (service_not_found)"


def test_public_service_and_patch(linx, api, tenant):
    created, container = tenant
    key = created["api_key"]
    service = linx.json(
        "publish", container["container_id"], "--port", "8080", "--name", "web", "--public", key=key
    )
    assert service["auth_mode"] == "public" and "linx_token" not in service["public_url"]
    assert service["expires_at"] is None

    patched = linx.json(
        "patch", service["service_id"], "--ttl", "30m", "--auth-mode", "service_token", key=key
    )
    assert patched["auth_mode"] == "service_token" and "linx_token=" in patched["public_url"]
    assert patched["expires_at"] - patched["updated_at"] == 1800
    cleared = linx.json("patch", service["service_id"], "--ttl", "none", key=key)
    assert cleared["expires_at"] is None
    assert "nothing to change" in linx("patch", service["service_id"], key=key, expect=2).stderr


def test_json_output_is_exactly_the_apis(linx, api, tenant):
    created, container = tenant
    key, cid = created["api_key"], container["container_id"]
    published = linx.json("publish", cid, "--port", "7001", "--name", "amp", key=key)
    sid = published["service_id"]
    assert published == api.call("GET", f"/api/services/{sid}", key, expect=200).json()
    for args, path in [
        (("containers",), "/api/containers"),
        (("list", cid), f"/api/containers/{cid}/services"),
        (("show", sid), f"/api/services/{sid}"),
        (("links", "list", sid), f"/api/services/{sid}/share-links"),
    ]:
        assert linx.json(*args, key=key) == api.call("GET", path, key, expect=200).json(), args
    for args, path in [
        (("admin", "tenant", "list"), "/api/admin/tenants"),
        (("admin", "tenant", "show", created["tenant_id"]), f"/api/admin/tenants/{created['tenant_id']}"),
        (("admin", "container", "list"), "/api/admin/containers"),
        (("admin", "container", "show", cid), f"/api/admin/containers/{cid}"),
    ]:
        assert linx.json(*args, admin=True) == api.call("GET", path, expect=200).json(), args
    # The root --json works as well as the command's.
    root = linx("--json", "show", sid, key=key).stdout
    assert json.loads(root) == api.call("GET", f"/api/services/{sid}", key, expect=200).json()


def test_share_links(linx, api, tenant):
    created, container = tenant
    key = created["api_key"]
    sid = linx.json("publish", container["container_id"], "--port", "7001", "--name", "amp", key=key)[
        "service_id"
    ]
    link = linx.json("links", "create", sid, "--ttl", "10m", "--label", "demo", key=key)
    assert link["label"] == "demo" and link["expires_at"] - link["created_at"] == 600
    assert "linx_token=" in link["url"]
    listing = linx("links", "list", sid, key=key).stdout
    assert link["link_id"] in listing and "demo" in listing and "linx_token" not in listing
    assert (
        linx("links", "delete", sid, link["link_id"], key=key).stdout.strip() == f"deleted {link['link_id']}"
    )
    assert api.call("GET", f"/api/services/{sid}/share-links", key, expect=200).json() == {"share_links": []}


# ---------------------------------------------------------------------------------- errors
def test_api_errors_print_their_message_and_exit_1(linx, tenant):
    created, container = tenant
    key, cid = created["api_key"], container["container_id"]

    bad = linx("publish", cid, "--port", "7001", "--name", "Not_A_Name", key=key, expect=1)
    assert bad.stdout == ""
    assert bad.stderr.startswith("error: name: expected ")
    assert bad.stderr.rstrip().endswith("(invalid_field)")

    missing = linx("publish", "ctr_doesnotexist", "--port", "7001", "--name", "amp", key=key, expect=1)
    assert missing.stderr.strip() == "error: container not found (container_not_found)"

    linx("publish", cid, "--port", "7001", "--name", "amp", key=key)
    conflict = linx("publish", cid, "--port", "7002", "--name", "amp", key=key, expect=1)
    assert conflict.stderr.rstrip().endswith("(name_conflict)")

    wrong_key = linx("containers", key="lxk_not-a-real-key", expect=1)
    assert wrong_key.stderr.rstrip().endswith("(unauthorized)")
    tenant_on_admin = linx("admin", "tenant", "list", key=key, expect=2)  # no admin token given
    assert "LINX_ADMIN_TOKEN" in tenant_on_admin.stderr


def test_usage_errors_exit_2(linx, tenant):
    created, container = tenant
    no_key = linx("containers", expect=2)
    assert "no API key: set LINX_API_KEY" in no_key.stderr
    no_port = linx("publish", container["container_id"], "--name", "amp", key=created["api_key"], expect=2)
    assert "--port" in no_port.stderr
    bad_ttl = linx("publish", "c", "--port", "1", "--name", "a", "--ttl", "soon", key="k", expect=2)
    assert "--ttl" in bad_ttl.stderr
    assert "--port" in linx("publish", "c", "--port", "70000", "--name", "a", key="k", expect=2).stderr
    assert "No such command" in linx("no-such-command", expect=2).stderr


def test_unreachable_api_is_a_clear_error(linx):
    result = Linx(f"http://127.0.0.1:{free_port()}")("containers", key="k", expect=1)
    assert result.stderr.startswith("error: cannot reach the Linx API at http://127.0.0.1:")
    assert "Connection refused" in result.stderr and result.stderr.rstrip().endswith("(connection_failed)")


# ------------------------------------------------------------------------------ wait-ready
def test_wait_ready_succeeds_once_a_proxy_reaches_the_target(linx, tenant, proxy):
    created, container = tenant
    key = created["api_key"]
    with _listening_socket() as target:
        port = str(target.getsockname()[1])
        sid = linx.json("publish", container["container_id"], "--port", port, "--name", "up", key=key)[
            "service_id"
        ]
        result = linx("wait-ready", sid, "--timeout", "20", key=key)
        shown = linx.json("show", sid, key=key)
        assert shown["status"] == "ready"
        assert result.stdout.strip() == f"ready: {shown['public_url']}"
        assert linx.json("wait-ready", sid, "--timeout", "20", key=key) == shown


def test_wait_ready_fails_clearly_for_a_refused_port(linx, tenant, proxy):
    created, container = tenant
    key = created["api_key"]
    port = free_port()  # nothing listens there
    sid = linx.json("publish", container["container_id"], "--port", str(port), "--name", "down", key=key)[
        "service_id"
    ]
    wait_for(lambda: linx.json("show", sid, key=key)["status"] == "target_unreachable", 10)
    # --fail-fast: target_unreachable ends it at once, saying what to check.
    result = linx("wait-ready", sid, "--timeout", "20", "--fail-fast", key=key, expect=1)
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: service {sid} is target_unreachable: ")
    assert f"port {port} of container {container['container_id']}" in result.stderr
    assert result.stderr.rstrip().endswith("(target_unreachable)")

    # by default it is a target still starting: waited for until the timeout (SPEC section 7)
    waited = linx("wait-ready", sid, "--timeout", "0.5", key=key, expect=1)
    assert "not ready after 0.5s (status target_unreachable)" in waited.stderr
    assert waited.stderr.rstrip().endswith("(timeout)")


def test_wait_ready_waits_for_an_app_that_starts_after_publication(linx, tenant, proxy):
    created, container = tenant
    key = created["api_key"]
    port = free_port()
    sid = linx.json("publish", container["container_id"], "--port", str(port), "--name", "late", key=key)[
        "service_id"
    ]
    wait_for(lambda: linx.json("show", sid, key=key)["status"] == "target_unreachable", 10)
    server = socket.socket()
    timer = threading.Timer(1.5, lambda: (server.bind(("127.0.0.1", port)), server.listen()))
    timer.start()
    try:
        result = linx("wait-ready", sid, "--timeout", "20", key=key)
        assert result.stdout.startswith("ready: ")
    finally:
        timer.cancel()
        server.close()


def test_wait_ready_times_out_while_no_proxy_has_probed(linx, tenant):
    created, container = tenant
    key = created["api_key"]
    sid = linx.json("publish", container["container_id"], "--port", "7001", "--name", "amp", key=key)[
        "service_id"
    ]
    result = linx("wait-ready", sid, "--timeout", "0.3", key=key, expect=1)
    assert f"service {sid} was not ready after 0.3s (status pending)" in result.stderr
    assert "is a proxy running" in result.stderr


def test_wait_ready_of_an_unknown_service_is_an_api_error(linx, tenant):
    created, _ = tenant
    result = linx("wait-ready", "lnx_nope", key=created["api_key"], expect=1)
    assert result.stderr.strip() == "error: service not found (service_not_found)"


# ----------------------------------------------------------------------------- operators
def test_admin_tenants_keys_and_containers(linx, api):
    created = linx.json("admin", "tenant", "create", "acme", admin=True)
    tid = created["tenant_id"]
    assert created["api_key"] and created["key_id"]
    human = linx("admin", "tenant", "create", "acme-2", admin=True)
    assert "api_key" in human.stdout and "shown only once" in human.stderr
    assert tid in linx("admin", "tenant", "list", admin=True).stdout

    extra = linx.json("admin", "key", "create", tid, admin=True)
    assert extra["key_id"] != created["key_id"]
    assert linx("containers", key=extra["api_key"]).exit_code == 0
    assert linx("admin", "key", "revoke", tid, created["key_id"], admin=True).stdout.strip() == (
        f"revoked {created['key_id']}"
    )
    revoked = linx("containers", key=created["api_key"], expect=1)
    assert revoked.stderr.strip() == "error: unknown or revoked API key (unauthorized)"

    own_id = "ctr-cli-" + secrets.token_hex(3)
    registered = linx.json(
        *("admin", "container", "register", "--tenant", tid, "--address", "10.1.2.3"),
        *("--name", "box", "--id", own_id, "--no-networking"),
        admin=True,
    )
    cid = registered["container_id"]
    assert cid == own_id and registered["state"] == "running" and registered["networking_enabled"] is False
    assert registered["network_ready"] is True and registered["exec_ready"] is True
    assert cid in linx("containers", key=extra["api_key"]).stdout

    patched = linx.json("admin", "container", "patch", cid, "--state", "stopped", "--networking", admin=True)
    assert patched["state"] == "stopped" and patched["networking_enabled"] is True
    assert "nothing to change" in linx("admin", "container", "patch", cid, admin=True, expect=2).stderr
    assert "stopped" in linx("admin", "container", "show", cid, admin=True).stdout
    assert cid in linx("admin", "container", "list", "--tenant", tid, admin=True).stdout

    assert linx("admin", "container", "delete", cid, admin=True).stdout.strip() == f"deleted {cid}"
    api.call("GET", f"/api/admin/containers/{cid}", expect=404)
    again = linx("admin", "container", "delete", cid, admin=True, expect=1)
    assert again.stderr.strip() == "error: container not found (container_not_found)"


def test_proxy_status(linx, proxy):
    result = linx("proxy", "status", "--admin-url", proxy.admin_url)
    lines = _fields(result.stdout)
    assert lines["ready"] == "yes" and lines["synced"] == "yes" and lines["fresh"] == "yes"
    assert "full syncs" in result.stdout and "open connections" in result.stdout
    as_json = linx.json("proxy", "status", "--admin-url", proxy.admin_url)
    assert as_json["ready"] is True and as_json["readyz"]["status"] == "ready"
    assert as_json["metrics"]["linx_proxy_full_syncs"] >= 1

    down = linx("proxy", "status", "--admin-url", f"http://127.0.0.1:{free_port()}", expect=1)
    assert down.stderr.startswith("error: cannot reach the proxy admin endpoint at http://127.0.0.1:")


# ------------------------------------------------------------------------ the Python client
def test_client_raises_api_errors_with_status_code_message_and_field(control, tenant):
    created, container = tenant
    with Client(control.url, api_key=created["api_key"]) as client:
        with pytest.raises(LinxApiError) as info:
            client.publish(container["container_id"], "amp", 0)
        assert (info.value.status, info.value.code, info.value.field) == (400, "invalid_field", "target_port")
        assert "target_port" in info.value.message
        with pytest.raises(LinxApiError) as info:
            client.get_service("lnx_missing")
        assert (info.value.status, info.value.code) == (404, "service_not_found")
        assert str(info.value) == "service not found (service_not_found, HTTP 404)"
        with pytest.raises(LinxCredentialsError):
            client.list_tenants()  # no admin token given
    assert created["api_key"] not in repr(client)


def test_client_covers_every_route(control, api):
    admin = Client(control.url, admin_token=ADMIN_TOKEN)
    created = admin.create_tenant("client-" + secrets.token_hex(2))
    tid = created["tenant_id"]
    assert admin.get_tenant(tid)["key_ids"] == [created["key_id"]]
    assert tid in [t["tenant_id"] for t in admin.list_tenants()]
    key2 = admin.create_key(tid)
    admin.revoke_key(tid, key2["key_id"])
    api.call("GET", "/api/containers", key2["api_key"], expect=401)

    ctr = admin.register_container(tid, "127.0.0.1", name="box", network_ready=False)
    cid = ctr["container_id"]
    assert ctr["network_ready"] is False and ctr["name"] == "box"
    assert admin.patch_container(cid, network_ready=True)["network_ready"] is True
    assert (
        admin.admin_get_container(cid) == api.call("GET", f"/api/admin/containers/{cid}", expect=200).json()
    )
    assert [c["container_id"] for c in admin.admin_list_containers(tid)] == [cid]

    tenant = Client(control.url, api_key=created["api_key"])
    assert tenant.list_containers() == [admin.admin_get_container(cid)]
    assert tenant.get_container(cid)["container_id"] == cid
    svc = tenant.publish(cid, "amp", 7001, enable_websockets=True, ttl_secs=60, cors_preflight="passthrough")
    sid = svc["service_id"]
    assert svc["websocket_url"] and svc["cors_preflight"] == "passthrough"
    assert tenant.list_services(cid) == [tenant.get_service(sid)]
    assert tenant.patch_service(sid, ttl_secs=None)["expires_at"] is None
    assert tenant.rotate_token(sid)["public_url"] != svc["public_url"]
    link = tenant.create_share_link(sid, label="x")
    assert [ln["link_id"] for ln in tenant.list_share_links(sid)] == [link["link_id"]]
    tenant.delete_share_link(sid, link["link_id"])
    assert tenant.list_share_links(sid) == []
    tenant.delete_service(sid)
    with pytest.raises(LinxApiError):
        tenant.get_service(sid)
    admin.delete_container(cid)
    assert tenant.list_containers() == []
    admin.close()
    tenant.close()


def test_client_wait_ready_outcomes(control, tenant, proxy):
    created, container = tenant
    with Client(control.url, api_key=created["api_key"]) as client, _listening_socket() as target:
        up = client.publish(container["container_id"], "up", target.getsockname()[1])
        assert client.wait_ready(up["service_id"], 20)["status"] == "ready"
        down = client.publish(container["container_id"], "down", free_port())
        with pytest.raises(LinxNotReadyError) as info:
            client.wait_ready(down["service_id"], 20, keep_waiting=False)
        assert info.value.code == "target_unreachable"
        assert info.value.service["service_id"] == down["service_id"]


def test_client_connection_errors_never_show_the_key():
    canary = "lxk_canary" + secrets.token_hex(8)
    with Client(f"http://127.0.0.1:{free_port()}", api_key=canary, timeout=2) as client:
        with pytest.raises(LinxConnectionError) as info:
            client.list_containers()
    assert "Connection refused" in info.value.message and info.value.code == "connection_failed"
    assert canary not in str(info.value) and canary not in repr(client)
