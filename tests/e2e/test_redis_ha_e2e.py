"""Linx on Redis Cluster and on Sentinel, including a failover while traffic flows."""

from __future__ import annotations

import threading

import pytest
import requests

from tests.helpers.procs import Api, ControlPlane, Proxy, wait_for
from tests.helpers.redis_topologies import Cluster, SentinelSet

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]


def _status(url: str, token: str) -> int:
    try:
        return requests.get(url, headers={"X-Linx-Token": token}, timeout=3).status_code
    except requests.RequestException:
        return -1


def _publish(api: Api, port: int, name: str) -> tuple[dict, str, str]:
    tenant_id, key = api.tenant(name)
    ctr = api.container(tenant_id)
    svc = api.publish(key, ctr["container_id"], port, name=name)
    return svc, key, svc["public_url"].split("linx_token=", 1)[1]


def test_linx_on_redis_cluster(stack):
    cluster = Cluster().start()
    env = {"LINX_REDIS_CLUSTER": "1"}
    control = proxy = None
    try:
        control = ControlPlane(cluster.url, "{linx}:", **env).wait_ready()
        proxy = Proxy(cluster.url, "{linx}:", **env).wait_ready()
        api = Api(control.url)
        svc, key, token = _publish(api, stack.backend.port, "cl")
        url = f"{proxy.url}/linx/{svc['service_id']}/"
        wait_for(lambda: _status(url, token) == 200, 2)
        rotated = api.call("POST", f"/api/services/{svc['service_id']}/rotate-token", key, expect=200).json()
        new_token = rotated["public_url"].split("linx_token=", 1)[1]
        wait_for(lambda: _status(url, token) == 403 and _status(url, new_token) == 200, 1)
        api.call("DELETE", f"/api/services/{svc['service_id']}", key, expect=204)
        wait_for(lambda: _status(url, new_token) == 404, 1)
    finally:
        for p in (proxy, control):
            if p is not None:
                p.stop()
        cluster.stop()


def test_cluster_mode_refuses_a_prefix_without_hash_tag(redis_server):
    proxy = Proxy(redis_server.url, "linx:", LINX_REDIS_CLUSTER="1")
    try:
        assert proxy.proc.proc.wait(20) != 0
        assert "LINX_KEY_PREFIX" in proxy.proc.output()
    finally:
        proxy.stop()


def test_sentinel_failover_during_traffic(stack):
    sentinels = SentinelSet().start()
    control = proxy = None
    try:
        control = ControlPlane(sentinels.master.url, "snt:", **sentinels.env).wait_ready()
        proxy = Proxy(sentinels.master.url, "snt:", **sentinels.env).wait_ready()
        api = Api(control.url)
        known, _, known_token = _publish(api, stack.backend.port, "known")
        doomed, doomed_key, doomed_token = _publish(api, stack.backend.port, "doomed")
        known_url = f"{proxy.url}/linx/{known['service_id']}/"
        doomed_url = f"{proxy.url}/linx/{doomed['service_id']}/"
        wait_for(
            lambda: _status(known_url, known_token) == 200 and _status(doomed_url, doomed_token) == 200, 3
        )
        # the replica must hold everything before the master goes
        wait_for(lambda: sentinels.replica.ping() and _replicated(sentinels, doomed["service_id"]), 5)
        results: list[int] = []
        stop = threading.Event()

        def traffic():
            while not stop.is_set():
                results.append(_status(known_url, known_token))

        t = threading.Thread(target=traffic)
        t.start()
        try:
            old_port = sentinels.master.port
            sentinels.master.kill()
            wait_for(lambda: sentinels.current_master_port() != old_port, 30, interval=0.1)

            def deleted():
                return (
                    api.call("DELETE", f"/api/services/{doomed['service_id']}", doomed_key).status_code == 204
                )

            wait_for(deleted, 20, interval=0.2)
            wait_for(lambda: _status(doomed_url, doomed_token) == 404, 10)
            fresh, _, fresh_token = _publish(api, stack.backend.port, "fresh")
            wait_for(lambda: _status(f"{proxy.url}/linx/{fresh['service_id']}/", fresh_token) == 200, 2)
        finally:
            stop.set()
            t.join()
        # the known service answered throughout the failover
        assert results and set(results) == {200}, sorted(set(results))
    finally:
        for p in (proxy, control):
            if p is not None:
                p.stop()
        sentinels.stop()


def _replicated(sentinels: SentinelSet, service_id: str) -> bool:
    import redis

    return bool(redis.Redis(port=sentinels.replica.port).exists(f"snt:service:{service_id}"))
