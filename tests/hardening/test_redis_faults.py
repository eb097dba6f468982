"""A failing Redis: killed and restarted, one proxy partitioned from it (a fault-injecting TCP
relay between that proxy and Redis), the change feed trimmed past a proxy's position, and a
convergence run of random operations with random partitions.

Each test builds its own Redis (append-only, fsync always: a 2xx from the control plane is on
disk), control plane and proxies; the containers are the session's echo backend.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import tempfile
import time

import pytest
import redis
import requests

from deploy.redis_process import RedisProcess
from tests.hardening.faults import TcpRelay
from tests.hardening.support import assert_clean_log
from tests.helpers.procs import Api, ControlPlane, Proxy, wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

RESYNC_BOUND = 5.0  # spec: a proxy resyncs within 5 s of Redis returning
PROPAGATION_BOUND = 1.0  # spec: changes take effect within 1 s on every proxy
CONVERGENCE_OPS = int(os.environ.get("LINX_CONVERGENCE_OPS", "300"))


class RedisWorld:
    """Its own Redis, control plane and proxies (some reaching Redis through a TcpRelay)."""

    def __init__(self, backend) -> None:
        self.dir = tempfile.mkdtemp(prefix="linx-hard-")
        self.redis = RedisProcess(
            workdir=self.dir, extra_args=("--appendonly", "yes", "--appendfsync", "always")
        ).start()
        self.prefix = f"r{secrets.token_hex(3)}:"
        self.backend = backend
        self.proxies: list[Proxy] = []
        self.relays: list[TcpRelay] = []
        self.control = ControlPlane(self.redis.url, self.prefix)
        try:
            self.control.wait_ready()
            self.api = Api(self.control.url)
            self.tenant_id, self.key = self.api.tenant("r" + secrets.token_hex(2))
        except BaseException:
            self.stop()
            raise

    def proxy(self, relayed: bool = False, **env: str) -> tuple[Proxy, TcpRelay | None]:
        relay = None
        url = self.redis.url
        if relayed:
            relay = TcpRelay(("127.0.0.1", self.redis.port))
            self.relays.append(relay)
            url = f"redis://127.0.0.1:{relay.port}/0"
        proxy = Proxy(url, self.prefix, **env)
        self.proxies.append(proxy)
        return proxy.wait_ready(), relay

    def container(self) -> str:
        return self.api.container(self.tenant_id)["container_id"]

    def publish(self, container_id: str | None = None, **fields) -> dict:
        fields.setdefault("name", "s" + secrets.token_hex(4))
        return self.api.publish(self.key, container_id or self.container(), self.backend.port, **fields)

    def stop(self) -> None:
        for p in self.proxies:
            p.stop()
        for r in self.relays:
            r.close()
        self.control.stop()
        self.redis.stop()


def token_of(record: dict) -> str | None:
    url = record["public_url"]
    return url.split("linx_token=", 1)[1] if "linx_token=" in url else None


def status(proxy: Proxy, sid: str, token: str | None = None, session=requests) -> tuple[int, str | None]:
    headers = {"X-Linx-Token": token} if token else {}
    try:
        resp = session.get(f"{proxy.url}/linx/{sid}/echo", headers=headers, timeout=3)
    except requests.RequestException:
        return -1, None
    return resp.status_code, resp.headers.get("X-Linx-Error")


@pytest.fixture
def world(hstack):
    worlds: list[RedisWorld] = []

    def make() -> RedisWorld:
        w = RedisWorld(hstack.backend)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.stop()


# --------------------------------------------------------------------------- kill and restart
@pytest.mark.parametrize("outage", [4.0, pytest.param(30.0, marks=pytest.mark.slow)], ids=["4s", "30s"])
def test_redis_killed_and_restarted(world, outage):
    w = world()
    a, _ = w.proxy()
    b, _ = w.proxy()
    ctr = w.container()
    keep = w.publish(ctr)
    pub = w.publish(ctr, auth_mode="public")
    gone = w.publish(ctr)
    rot = w.publish(ctr)
    other_ctr = w.container()
    stop = w.publish(other_ctr)
    last = w.publish(ctr)  # the last change before the outage must survive it
    live = [(keep, token_of(keep)), (pub, None), (gone, token_of(gone)), (rot, token_of(rot))]
    live += [(stop, token_of(stop)), (last, token_of(last))]
    for p in (a, b):
        for svc, tok in live:
            wait_for(lambda p=p, s=svc, t=tok: status(p, s["service_id"], t)[0] == 200, 5)

    w.redis.kill()
    down_at = time.monotonic()
    served = refused = 0
    mutations = [
        ("POST", f"/api/containers/{ctr}/services", w.key, {"name": "during", "target_port": 1}),
        ("DELETE", f"/api/services/{gone['service_id']}", w.key, None),
        ("POST", f"/api/services/{rot['service_id']}/rotate-token", w.key, None),
        ("PATCH", f"/api/admin/containers/{other_ctr}", None, {"state": "stopped"}),
        ("POST", "/api/admin/tenants", None, {"name": "during"}),
    ]
    while time.monotonic() - down_at < outage:
        for p in (a, b):  # known services keep working, token ones included (staleness 60 s)
            for svc, tok in live:
                code = status(p, svc["service_id"], tok)[0]
                assert code == 200, (svc["service_id"], code)
                served += 1
        for method, path, key, body in mutations:
            kw = {"json": body} if body is not None else {}
            resp = w.api.call(method, path, key, **kw)
            assert resp.status_code == 503, (method, path, resp.status_code, resp.text)  # never a false 2xx
            refused += 1
    w.redis.start()
    back_at = time.monotonic()

    # mutate as soon as the control plane can (503 until its own connection is back)
    def mutate(method, path, key=None, **kw):
        return wait_for(
            lambda: (r := w.api.call(method, path, key, **kw)).status_code < 500 and r, RESYNC_BOUND
        )

    assert mutate("DELETE", f"/api/services/{gone['service_id']}", w.key).status_code == 204
    rotated = mutate("POST", f"/api/services/{rot['service_id']}/rotate-token", w.key).json()
    patched = mutate("PATCH", f"/api/admin/containers/{other_ctr}", json={"state": "stopped"})
    assert patched.status_code == 200
    fresh = w.publish(ctr)
    changed_at = time.monotonic()

    def converged(p: Proxy) -> bool:
        return (
            status(p, gone["service_id"], token_of(gone))[0] == 404
            and status(p, rot["service_id"], token_of(rot))[0] == 403
            and status(p, rot["service_id"], token_of(rotated))[0] == 200
            and status(p, stop["service_id"], token_of(stop))[0] == 503
            and status(p, fresh["service_id"], token_of(fresh))[0] == 200
            and status(p, keep["service_id"], token_of(keep))[0] == 200
            and status(p, last["service_id"], token_of(last))[0] == 200
            and status(p, pub["service_id"])[0] == 200
        )

    for p in (a, b):
        wait_for(lambda p=p: converged(p), RESYNC_BOUND, what="proxy converged after Redis returned")
        assert requests.get(p.admin_url + "/readyz", timeout=3).status_code == 200
    done = time.monotonic()
    print(
        f"outage {outage:.0f}s: {served} requests served, {refused} mutations refused with 503; "
        f"changes seen by every proxy {done - changed_at:.2f}s after they were made, "
        f"{done - back_at:.2f}s after Redis returned"
    )
    assert done - back_at <= RESYNC_BOUND + 1.0
    for p in (a, b):
        assert_clean_log(p)


# ------------------------------------------------------------------------------- partition
def test_partitioned_proxy_fails_closed_then_catches_up(world):
    w = world()
    a, _ = w.proxy(LINX_MAX_STALENESS_SECS="3")
    b, relay = w.proxy(relayed=True, LINX_MAX_STALENESS_SECS="3")
    ctr = w.container()
    svc = w.publish(ctr)
    pub = w.publish(ctr, auth_mode="public")
    sid, tok = svc["service_id"], token_of(svc)
    for p in (a, b):
        wait_for(lambda p=p: status(p, sid, tok)[0] == 200 and status(p, pub["service_id"])[0] == 200, 5)

    relay.cut()
    cut_at = time.monotonic()
    w.api.call("DELETE", f"/api/services/{sid}", w.key, expect=204)
    deleted_at = time.monotonic()
    wait_for(lambda: status(a, sid, tok)[0] == 404, PROPAGATION_BOUND, interval=0.01)
    assert time.monotonic() - deleted_at <= PROPAGATION_BOUND

    # the partitioned proxy serves what it knows, then fails closed at the staleness limit
    seen = []
    while True:
        code, err = status(b, sid, tok)
        now = time.monotonic() - cut_at
        seen.append((round(now, 2), code, err))
        if code == 503:
            assert err == "sync_stale"
            break
        assert code == 200, seen
        assert now <= 3 + 1.0, f"still serving {now:.1f}s after losing Redis: {seen[-3:]}"
        time.sleep(0.02)  # probe pace
    stale_after = time.monotonic() - cut_at
    assert stale_after >= 3 - 1.2, seen  # it did keep serving for about the staleness limit
    assert status(b, pub["service_id"])[0] == 200  # public services keep serving
    assert requests.get(b.admin_url + "/readyz", timeout=3).status_code == 503
    # still closed while the partition lasts
    for _ in range(5):
        assert status(b, sid, tok) == (503, "sync_stale")

    relay.heal()
    healed_at = time.monotonic()
    wait_for(lambda: status(b, sid, tok)[0] == 404, RESYNC_BOUND, interval=0.01)
    refused_after = time.monotonic() - healed_at
    print(
        f"partition: stale after {stale_after:.2f}s; "
        f"deleted service refused {refused_after:.2f}s after the heal"
    )
    wait_for(lambda: requests.get(b.admin_url + "/readyz", timeout=3).status_code == 200, RESYNC_BOUND)
    assert status(b, pub["service_id"])[0] == 200
    assert_clean_log(b)


# ---------------------------------------------------------------------------- trimmed feed
def full_syncs(proxy: Proxy) -> float:
    m = re.search(r"^linx_proxy_full_syncs_total (\S+)$", proxy.metrics(), re.M)
    assert m, proxy.metrics()
    return float(m.group(1))


def test_feed_trimmed_past_a_partitioned_proxy(world):
    w = world()
    a, _ = w.proxy()
    b, relay = w.proxy(relayed=True)
    ctr = w.container()
    s1, s2, s3 = w.publish(ctr), w.publish(ctr), w.publish(ctr)
    for p in (a, b):
        for s in (s1, s2, s3):
            wait_for(lambda p=p, s=s: status(p, s["service_id"], token_of(s))[0] == 200, 5)
    syncs_before = full_syncs(b)

    relay.cut()
    w.api.call("DELETE", f"/api/services/{s1['service_id']}", w.key, expect=204)
    rotated = w.api.call("POST", f"/api/services/{s2['service_id']}/rotate-token", w.key, expect=200).json()
    s4, s5 = w.publish(ctr), w.publish(ctr)
    client = redis.Redis.from_url(w.redis.url)
    try:
        client.xtrim(w.prefix + "feed", maxlen=0)
        assert client.xlen(w.prefix + "feed") == 0
    finally:
        client.close()
    wait_for(lambda: status(a, s5["service_id"], token_of(s5))[0] == 200, PROPAGATION_BOUND)
    assert status(b, s1["service_id"], token_of(s1))[0] == 200  # B has seen none of it

    relay.heal()
    healed_at = time.monotonic()

    def matches(p: Proxy) -> bool:
        return (
            status(p, s1["service_id"], token_of(s1))[0] == 404
            and status(p, s2["service_id"], token_of(s2))[0] == 403
            and status(p, s2["service_id"], token_of(rotated))[0] == 200
            and status(p, s3["service_id"], token_of(s3))[0] == 200
            and status(p, s4["service_id"], token_of(s4))[0] == 200
            and status(p, s5["service_id"], token_of(s5))[0] == 200
        )

    wait_for(lambda: matches(b), RESYNC_BOUND)
    assert matches(a)
    assert full_syncs(b) >= syncs_before + 1  # it noticed the gap and took a full snapshot
    print(f"trimmed feed: resynced {time.monotonic() - healed_at:.2f}s after the heal")
    assert_clean_log(b)


# ----------------------------------------------------------------------------- convergence
@pytest.mark.timeout(max(300, CONVERGENCE_OPS // 5))
def test_convergence_of_random_operations_with_random_partitions(world):
    rnd = random.Random(int(os.environ.get("LINX_CONVERGENCE_SEED", "20240")))
    w = world()
    direct, _ = w.proxy()
    cut_off = [w.proxy(relayed=True) for _ in range(2)]
    proxies = [direct] + [p for p, _ in cut_off]
    relays = [r for _, r in cut_off]
    containers = {w.container(): True for _ in range(4)}  # container id -> running
    services: dict[str, dict] = {}  # live: sid -> {"ctr", "token", "old": [tokens], "public"}
    deleted: list[str] = []
    counts: dict[str, int] = {}
    for i in range(CONVERGENCE_OPS):
        if rnd.random() < 0.08:
            relay = rnd.choice(relays)
            (relay.heal if not relay.flowing.is_set() else relay.cut)()
            counts["partition toggles"] = counts.get("partition toggles", 0) + 1
        if rnd.random() < 0.02:
            rnd.choice(relays).reset_all()  # a dropped Redis connection: reconnect and resume
            counts["connection resets"] = counts.get("connection resets", 0) + 1
        op = rnd.choices(["create", "delete", "rotate", "patch"], [4, 2, 2, 1])[0]
        if op != "create" and not services:
            op = "create"
        counts[op] = counts.get(op, 0) + 1
        if op == "create":
            ctr = rnd.choice(list(containers))
            public = rnd.random() < 0.3
            rec = w.publish(ctr, auth_mode="public" if public else "service_token")
            services[rec["service_id"]] = {"ctr": ctr, "token": token_of(rec), "old": [], "public": public}
        elif op == "delete":
            sid = rnd.choice(list(services))
            w.api.call("DELETE", f"/api/services/{sid}", w.key, expect=204)
            deleted.append(sid)
            del services[sid]
        elif op == "rotate":
            sid = rnd.choice([s for s, v in services.items() if not v["public"]] or list(services))
            rec = w.api.call("POST", f"/api/services/{sid}/rotate-token", w.key, expect=200).json()
            entry = services[sid]
            if entry["token"]:
                entry["old"].append(entry["token"])
            entry["token"] = token_of(rec)
        else:
            ctr = rnd.choice(list(containers))
            running = not containers[ctr]
            w.api.call(
                "PATCH",
                f"/api/admin/containers/{ctr}",
                json={"state": "running" if running else "stopped"},
                expect=200,
            )
            containers[ctr] = running
    for relay in relays:
        relay.heal()

    sessions = {p.port: requests.Session() for p in proxies}

    def mismatches(p: Proxy) -> list[str]:
        s = sessions[p.port]
        out = []
        for sid in deleted:
            if (got := status(p, sid, None, s)[0]) != 404:
                out.append(f"{sid} deleted but {got}")
        for sid, v in services.items():
            want = 200 if containers[v["ctr"]] else 503
            got = status(p, sid, v["token"], s)[0]
            if got != want:
                out.append(f"{sid} wants {want}, got {got}")
            for old in v["old"][-2:]:
                if (got := status(p, sid, old, s)[0]) != 403:
                    out.append(f"{sid} old token gives {got}")
        return out

    try:
        for p in proxies:
            wait_for(lambda p=p: not mismatches(p), RESYNC_BOUND + 5, interval=0.2)
            assert requests.get(p.admin_url + "/readyz", timeout=3).status_code == 200
    except (AssertionError, TimeoutError):
        raise AssertionError({p.port: mismatches(p)[:10] for p in proxies}) from None
    finally:
        for s in sessions.values():
            s.close()
    print(
        f"convergence: {CONVERGENCE_OPS} operations {sorted(counts.items())}; {len(services)} live and "
        f"{len(deleted)} deleted services agree on {len(proxies)} proxies"
    )
    for p in proxies:
        assert_clean_log(p)
