"""The operational listener: /healthz, /readyz and /metrics (never the management API)."""

from __future__ import annotations

import json
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web import resource, server


class _Json(resource.Resource):
    isLeaf = True

    def __init__(self, check: Callable[[], tuple[bool, dict]]) -> None:
        super().__init__()
        self.check = check

    def render_GET(self, request) -> bytes:
        ok, body = self.check()
        request.setResponseCode(200 if ok else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode() + b"\n"


class _Metrics(resource.Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry, before: Callable[[], None]) -> None:
        super().__init__()
        self.registry = registry
        self.before = before

    def render_GET(self, request) -> bytes:
        self.before()
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


def make_site(
    health: Callable[[], tuple[bool, dict]],
    ready: Callable[[], tuple[bool, dict]],
    registry: CollectorRegistry,
    refresh_metrics: Callable[[], None],
) -> server.Site:
    root = resource.Resource()
    root.putChild(b"healthz", _Json(health))
    root.putChild(b"readyz", _Json(ready))
    root.putChild(b"metrics", _Metrics(registry, refresh_metrics))
    site = server.Site(root)
    site.noisy = False
    site.log = lambda request: None  # probes every few seconds would drown the log
    return site
