"""GET /api/admin/proxies (SPEC section 7): the live proxies' heartbeats, from Redis."""

from __future__ import annotations

from shared.schema import HEARTBEAT_TTL_SECS

FIELDS = [
    "proxy_id",
    "host",
    "version",
    "routes",
    "open_connections",
    "sync_lag_secs",
    "started_at",
    "last_seen_at",
]


def _beat(proxy_id: str, now: float) -> dict:
    return {
        "proxy_id": proxy_id,
        "host": "node-1",
        "pid": 42,
        "version": "0.1.0",
        "routes": 3,
        "open_connections": 7,
        "sync_lag_secs": 0.2,
        "last_full_sync_at": int(now) - 50,
        "started_at": int(now) - 100,
        "last_seen_at": int(now),
    }


def test_lists_live_heartbeats_and_drops_stale_and_stopped_ones(api, clock, schema, redis_client):
    schema.put_heartbeat(redis_client, _beat("prx_a", clock.now), clock.now)
    schema.put_heartbeat(
        redis_client, _beat("prx_b", clock.now - HEARTBEAT_TTL_SECS - 1), clock.now - HEARTBEAT_TTL_SECS - 1
    )
    schema.put_heartbeat(redis_client, _beat("prx_c", clock.now), clock.now)
    schema.drop_heartbeat(redis_client, "prx_c")  # stopped cleanly
    r = api.http.get("/api/admin/proxies", headers=api.admin)
    assert r.status_code == 200
    proxies = r.json["proxies"]
    assert [p["proxy_id"] for p in proxies] == ["prx_a"]
    assert list(proxies[0])[: len(FIELDS)] == FIELDS
    assert proxies[0]["routes"] == 3 and proxies[0]["open_connections"] == 7
    assert redis_client.zscore(schema.keys.proxies, "prx_b") is None  # pruned


def test_proxies_is_admin_only(api):
    _, headers = api.tenant()
    assert api.http.get("/api/admin/proxies", headers=headers).status_code == 403
    assert api.http.get("/api/admin/proxies").status_code == 401
