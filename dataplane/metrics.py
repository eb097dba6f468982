"""Prometheus metrics of one proxy process. Labels never hold a token, only service ids."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class Metrics:
    """All of the proxy's metrics in their own registry (so tests can build many)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The per-request figures are plain numbers, turned into families only when /metrics is
        # scraped (on the reactor thread, like every request): no lock and no label lookup in
        # prometheus_client per request. They are taken in batches from the access log's
        # (``RequestStats.take``, wired in ``ProxyContext``).
        self.per_request = RequestStats()
        r.register(self.per_request)
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


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class RequestStats:
    """``linx_proxy_requests_total``, the latency histogram and the body byte counters."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.latency_sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        # What is gathered and not yet taken (the access log's batch): taken before a scrape.
        self.pending: Callable[[], None] | None = None

    def take(self, rows: list[tuple]) -> None:
        """Answered requests, as the access log gathers them: (time, service id, request head,
        status, request bytes, response bytes, duration, ...)."""
        counts, buckets = self.counts, self.buckets
        total = bytes_in = bytes_out = 0
        for row in rows:
            key = (row[1], row[3] // 100)
            counts[key] = counts.get(key, 0) + 1
            buckets[bisect_left(LATENCY_BUCKETS, row[6])] += 1
            total += row[6]
            bytes_in += row[4]
            bytes_out += row[5]
        self.latency_sum += total
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out

    def collect(self):
        if self.pending is not None:
            self.pending()
        requests = CounterMetricFamily(
            "linx_proxy_requests",
            "Requests answered, by service and status class",
            labels=["service", "status_class"],
        )
        for (sid, cls), n in self.counts.items():
            requests.add_metric([sid or "-", _CLASSES[min(max(cls, 1), 5) - 1]], n)
        yield requests
        yield CounterMetricFamily(
            "linx_proxy_request_bytes", "Request body bytes relayed to containers", value=self.bytes_in
        )
        yield CounterMetricFamily(
            "linx_proxy_response_bytes", "Response bytes relayed to clients", value=self.bytes_out
        )
        cumulative, running = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            running += n
            cumulative.append((_le(bound), running))
        yield HistogramMetricFamily(
            "linx_proxy_request_duration_seconds",
            "Time from a request head to the end of its response",
            buckets=cumulative,
            sum_value=self.latency_sum,
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
