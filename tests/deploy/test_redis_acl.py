"""deploy/redis-acl.conf on a real server: it grants the control plane and the proxies exactly
what they use, and refuses the rest.

The shipped file is used as is, except that its password-hash placeholders are replaced with
the hashes of test passwords and an ``ops`` user is appended so the test can read ``ACL LOG``.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
import redis
import requests

from control.client import Client, LinxApiError
from deploy.redis_process import RedisProcess, find_server_binary, free_port
from tests.helpers.backend_process import EchoBackend
from tests.helpers.procs import ADMIN_TOKEN, ControlPlane, Proxy, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ACL = ROOT / "deploy" / "redis-acl.conf"
PASSWORDS = {"CONTROL": "control-pw-" + "c" * 20, "PROXY": "proxy-pw-" + "p" * 20}
OPS_PASSWORD = "ops-pw-" + "o" * 20
PREFIX = "linx:"  # the prefix the shipped patterns name


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _configured(text: str) -> str:
    for role, password in PASSWORDS.items():
        text = text.replace(f"#REPLACE-WITH-SHA256-OF-THE-{role}-PASSWORD", "#" + _sha(password))
    return text + f"\nuser ops on #{_sha(OPS_PASSWORD)} ~* &* +@all\n"


def _user_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("user ")]


class AclRedis(RedisProcess):
    """A server whose default user is off: readiness is PING as the ``ops`` user."""

    def ping(self) -> bool:
        client = self.client("ops", OPS_PASSWORD, timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def client(self, user: str, password: str, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis(port=self.port, username=user, password=password, socket_timeout=timeout)

    def url_for(self, user: str) -> str:
        return f"redis://{user}:{PASSWORDS[user.split('-')[1].upper()]}@127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory):
    conf = tmp_path_factory.mktemp("acl") / "linx-acl.conf"
    conf.write_text(_configured(ACL.read_text()))
    server = AclRedis(extra_args=("--include", str(conf))).start()
    ops = server.client("ops", OPS_PASSWORD)
    try:
        yield server, ops
    finally:
        ops.close()
        server.stop()


def _dryrun(ops: redis.Redis, user: str, *command: str) -> bool:
    try:
        return ops.execute_command("ACL", "DRYRUN", user, *command) == b"OK"
    except redis.ResponseError:  # unknown command
        return False


# ---------------------------------------------------------------------------------- static
def test_the_shipped_placeholders_stop_redis_until_replaced(tmp_path):
    """Fail closed: unedited, the file is refused, so no account has a guessable password."""
    proc = subprocess.run(
        [find_server_binary(), "--port", str(free_port()), "--include", str(ACL), "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode != 0
    assert "password hash must be exactly 64 characters" in proc.stdout + proc.stderr


def test_users_and_their_commands(acl_redis):
    server, ops = acl_redis
    users = {line.split()[1]: line for line in (u.decode() for u in ops.execute_command("ACL", "LIST"))}
    assert set(users) == {"default", "linx-control", "linx-proxy", "ops"}
    assert " off " in users["default"] + " "
    for line in _user_lines(ACL.read_text()):
        for command in re.findall(r"(?<=\s)\+([a-z|]+)", line):
            # every command the file grants exists on the server (a typo would not load anyway)
            assert ops.execute_command("COMMAND", "INFO", command) != [None], command


def test_the_user_lines_also_load_as_an_aclfile(tmp_path):
    """The documented alternative: the same ``user`` lines in an aclfile (which has no comments)."""
    aclfile = tmp_path / "users.acl"
    aclfile.write_text("\n".join(_user_lines(_configured(ACL.read_text()))) + "\n")
    server = AclRedis(extra_args=("--aclfile", str(aclfile))).start()
    try:
        client = server.client("linx-control", PASSWORDS["CONTROL"])
        assert client.set("linx:x", "1") and client.get("linx:x") == b"1"
        client.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("user", "command", "allowed"),
    [
        # the control plane: every linx:* key, data commands only
        ("linx-control", ("SET", "linx:service:x", "1"), True),
        ("linx-control", ("XADD", "linx:feed", "*", "k", "v"), True),
        ("linx-control", ("GET", "other:key"), False),
        ("linx-control", ("FLUSHALL",), False),
        ("linx-control", ("KEYS", "*"), False),
        ("linx-control", ("CONFIG", "GET", "*"), False),
        ("linx-control", ("EVAL", "return 1", "0"), False),
        ("linx-control", ("SUBSCRIBE", "linx:x"), False),
        # the proxy: reads what it syncs from...
        ("linx-proxy", ("GET", "linx:service:x"), True),
        ("linx-proxy", ("MGET", "linx:container:a", "linx:container:b"), True),
        ("linx-proxy", ("SMEMBERS", "linx:services"), True),
        ("linx-proxy", ("XREAD", "COUNT", "1", "BLOCK", "10", "STREAMS", "linx:feed", "0-0"), True),
        ("linx-proxy", ("XINFO", "STREAM", "linx:feed"), True),
        ("linx-proxy", ("SET", "linx:epoch", "e", "NX"), True),
        ("linx-proxy", ("EVAL", "return 1", "2", "linx:service:x", "linx:status:x"), True),
        ("linx-proxy", ("EVAL", "return 1", "2", "linx:service:x", "linx:linkused:x"), True),
        ("linx-proxy", ("SET", "linx:status:x", "{}"), True),
        # ...and nothing else: no tenants, API key digests or records to write
        ("linx-proxy", ("GET", "linx:tenant:x"), False),
        ("linx-proxy", ("GET", "linx:apikey:x"), False),
        ("linx-proxy", ("SET", "linx:service:x", "1"), False),
        ("linx-proxy", ("SET", "linx:container:x", "1"), False),
        ("linx-proxy", ("DEL", "linx:status:x"), False),
        ("linx-proxy", ("XADD", "linx:feed", "*", "k", "v"), False),
        ("linx-proxy", ("EVAL", "return 1", "1", "linx:tenant:x"), False),
        ("linx-proxy", ("EVAL", "return 1", "1", "linx:feed"), False),
        ("linx-proxy", ("FLUSHALL",), False),
        ("linx-proxy", ("CONFIG", "SET", "appendonly", "no"), False),
    ],
)
def test_what_each_user_may_run(acl_redis, user, command, allowed):
    _, ops = acl_redis
    assert _dryrun(ops, user, *command) is allowed


def test_a_proxy_script_cannot_touch_a_service_record(acl_redis):
    server, ops = acl_redis
    ops.set("linx:service:victim", "original")
    proxy = server.client("linx-proxy", PASSWORDS["PROXY"])
    try:
        for script in ("redis.call('SET', KEYS[1], 'forged')", "redis.call('DEL', KEYS[1])"):
            with pytest.raises(redis.ResponseError, match="ACL failure in script"):
                proxy.eval(script, 1, "linx:service:victim")
        assert ops.get("linx:service:victim") == b"original"
    finally:
        proxy.close()
        ops.delete("linx:service:victim")
        ops.execute_command("ACL", "LOG", "RESET")


# ------------------------------------------------------------------------------ end to end
def test_control_plane_and_proxy_work_through_the_acl(acl_redis):
    server, ops = acl_redis
    ops.execute_command("ACL", "LOG", "RESET")
    backend = EchoBackend().start()
    control = ControlPlane(server.url_for("linx-control"), PREFIX)
    proxy = None
    try:
        control.wait_ready()
        admin = Client(control.url, admin_token=ADMIN_TOKEN)
        tenant = admin.create_tenant("acl")
        spare = admin.create_key(tenant["tenant_id"])
        admin.revoke_key(tenant["tenant_id"], spare["key_id"])
        ctr = admin.register_container(tenant["tenant_id"], "127.0.0.1")
        api = Client(control.url, api_key=tenant["api_key"])
        early = api.publish(ctr["container_id"], "early", backend.port)
        # Refusals inside a transaction end it with UNWATCH.
        with pytest.raises(LinxApiError) as conflict:
            api.publish(ctr["container_id"], "early", backend.port)
        assert conflict.value.code == "name_conflict"
        with pytest.raises(LinxApiError):
            api.delete_service("lnx_missing")

        # A proxy started now loads the records in its first snapshot (SMEMBERS, MGET)...
        proxy = Proxy(server.url_for("linx-proxy"), PREFIX, LINX_PROBE_INTERVAL_SECS="0.2")
        proxy.wait_ready()
        assert api.wait_ready(early["service_id"], 20)["status"] == "ready"

        # ...and then follows the feed (XREAD, XRANGE), probes, and writes readiness (EVAL + SET).
        service = api.publish(ctr["container_id"], "echo", backend.port, ttl_secs=3600)
        sid = service["service_id"]
        url = f"{proxy.url}/linx/{sid}/echo"
        token = service["public_url"].split("linx_token=", 1)[1]
        assert api.wait_ready(sid, 20)["status"] == "ready"
        wait_for(lambda: requests.get(url, params={"linx_token": token}, timeout=5).status_code == 200, 10)

        # A share link's use is written back by the proxy (EVAL + HSET).
        link = api.create_share_link(sid, label="acl")
        link_token = link["url"].split("linx_token=", 1)[1]
        assert requests.get(url, params={"linx_token": link_token}, timeout=5).status_code == 200
        wait_for(lambda: api.list_share_links(sid)[0]["last_used_at"] is not None, 10, what="link use")
        api.delete_share_link(sid, link["link_id"])

        # Rotation, a container change and a delete reach the proxy through the feed.
        api.rotate_token(sid)
        wait_for(lambda: requests.get(url, params={"linx_token": token}, timeout=5).status_code == 403, 5)
        api.patch_service(sid, auth_mode="public")
        wait_for(lambda: requests.get(url, timeout=5).status_code == 200, 5)
        admin.patch_container(ctr["container_id"], state="stopped")
        wait_for(lambda: requests.get(url, timeout=5).status_code == 503, 5)
        admin.patch_container(ctr["container_id"], state="running")
        api.delete_service(sid)
        wait_for(lambda: requests.get(url, timeout=5).status_code == 404, 5)
        admin.delete_container(ctr["container_id"])
        admin.close()
        api.close()

        # The proxy keeps following the feed with no denial anywhere: nothing was refused to
        # either process, background commands (health checks, client names) included.
        denials = ops.execute_command("ACL", "LOG")
        assert denials == [], denials
        assert proxy.ready() and control.proc.alive()
    finally:
        if proxy is not None:
            proxy.stop()
        control.stop()
        backend.stop()
