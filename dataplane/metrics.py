"""Prometheus metrics of one proxy process. Labels never hold a token, only service ids."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Metrics:
    """All of the proxy's metrics in their own registry (so tests can build many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "linx_proxy_requests",
            "Requests answered, by service and status class",
            ["service", "status_class"],
            registry=r,
        )
        self.bytes_in = Counter(
            "linx_proxy_request_bytes", "Request body bytes relayed to containers", registry=r
        )
        self.bytes_out = Counter("linx_proxy_response_bytes", "Response bytes relayed to clients", registry=r)
        self.latency = Histogram(
            "linx_proxy_request_duration_seconds",
            "Time from a request head to the end of its response",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.open_connections = Gauge("linx_proxy_open_connections", "Open client connections", registry=r)
        self.refused_connections = Counter(
            "linx_proxy_refused_connections",
            "Client connections answered 503 too_many_connections at LINX_MAX_CONNECTIONS",
            registry=r,
        )
        self.routes = Gauge("linx_proxy_routes", "Services in the route table", registry=r)
        self.sync_lag = Gauge(
            "linx_proxy_sync_lag_seconds",
            "Seconds since the last successful exchange with Redis",
            registry=r,
        )
        self.resyncs = Counter("linx_proxy_full_syncs", "Full snapshots loaded from Redis", registry=r)
        self.websockets = Gauge("linx_proxy_open_websockets", "WebSocket tunnels currently open", registry=r)
        self.probe_targets = Gauge(
            "linx_proxy_probe_targets", "Targets (address:port) whose readiness this proxy probes", registry=r
        )
        self.probe_lag = Gauge(
            "linx_proxy_probe_lag_seconds",
            "How late the probe round runs (above 0: more targets than the probe budget covers)",
            registry=r,
        )
        self._children: dict[tuple[str, int], object] = {}

    def count_request(self, service_id: str, status: int) -> None:
        key = (service_id, status // 100)
        child = self._children.get(key)
        if child is None:
            cls = _CLASSES[min(max(status // 100, 1), 5) - 1]
            child = self._children[key] = self.requests.labels(service_id or "-", cls)
        child.inc()
