"""The measurements that need no external tool: transfers, WebSocket load (through the peer
client), idle connections, route-sync latency and a large route table written into Redis."""

from __future__ import annotations

import socket
import statistics
import subprocess
import time
from urllib.parse import urlsplit

from bench.stack import status_kib
from control.client import Client
from deploy.stack import pinned

CHUNK = 1 << 20


def _split(url: str) -> tuple[str, int, str]:
    p = urlsplit(url)
    return p.hostname, p.port, (p.path or "/") + (f"?{p.query}" if p.query else "")


def _read_head(sock: socket.socket, buf: bytearray) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        n = sock.recv_into(buf, 65536)
        if not n:
            raise ConnectionError("closed before the response head: " + data[:200].decode("latin-1"))
        data += bytes(buf[:n])
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise ValueError("no Content-Length in " + head[:300].decode("latin-1"))


def download(url: str, expect: int) -> float:
    """GET ``url`` into a sink; MB/s (10^6 bytes) from sending the request to the last byte."""
    host, port, target = _split(url)
    buf = bytearray(CHUNK)
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head, rest = _read_head(s, buf)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"download {url}: {head[:200]!r}")
        total = _content_length(head)
        got = len(rest)
        view = memoryview(buf)
        while got < total:
            n = s.recv_into(view)
            if not n:
                raise ConnectionError(f"download {url}: closed after {got} of {total} bytes")
            got += n
        elapsed = time.perf_counter() - t0
    if total != expect:
        raise RuntimeError(f"download {url}: {total} bytes, expected {expect}")
    return total / elapsed / 1e6


def upload(url: str, size: int) -> float:
    """POST ``size`` bytes (Content-Length) and wait for the answer; MB/s."""
    host, port, target = _split(url)
    block = memoryview(b"u" * CHUNK)
    buf = bytearray(65536)
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t0 = time.perf_counter()
        s.sendall(
            f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        left = size
        while left:
            n = min(left, CHUNK)
            s.sendall(block[:n])
            left -= n
        head, _ = _read_head(s, buf)
        elapsed = time.perf_counter() - t0
    if not head.startswith(b"HTTP/1.1 2"):
        raise RuntimeError(f"upload {url}: {head[:200]!r}")
    return size / elapsed / 1e6


def ws_load(
    peer_cmd: list[str], url: str, conns: int, window: int, size: int, secs: float, warm: float, cpus
) -> dict:
    host, port, target = _split(url)
    args = pinned(
        [
            *peer_cmd,
            "client",
            host,
            str(port),
            target,
            str(conns),
            str(window),
            str(size),
            str(secs),
            str(warm),
        ],
        cpus,
    )
    out = subprocess.run(args, capture_output=True, text=True, timeout=secs + warm + 60)
    if out.returncode != 0:
        raise RuntimeError(f"WebSocket client failed ({out.returncode}): {out.stderr.strip()}")
    fields = dict(kv.split("=") for kv in out.stdout.split())
    seconds = float(fields["seconds"])
    return {
        "messages": int(fields["messages"]),
        "msgs_per_s": int(fields["messages"]) / seconds,
        "MBps": int(fields["bytes"]) / seconds / 1e6,
        "errors": int(fields["errors"]),
    }


def idle_connections(url: str, count: int, pids: list[int]) -> dict:
    """Open ``count`` keep-alive connections, one request each, and hold them; RSS delta."""
    host, port, target = _split(url)
    request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    time.sleep(0.3)
    before = status_kib(pids)
    socks = []
    buf = bytearray(65536)
    try:
        for _ in range(count):
            s = socket.create_connection((host, port))
            s.sendall(request)
            head, rest = _read_head(s, buf)
            need = _content_length(head) - len(rest)
            while need > 0:
                need -= s.recv_into(buf)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"idle connection request: {head[:200]!r}")
            socks.append(s)
        time.sleep(0.5)
        after = status_kib(pids)
    finally:
        for s in socks:
            s.close()
    return {"rss_before_kib": before, "rss_after_kib": after, "kib_per_conn": (after - before) / count}


class Poller:
    """GETs through a proxy over one keep-alive connection (reconnecting when it is closed)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock: socket.socket | None = None
        self.buf = bytearray(65536)

    def status(self, target: str) -> int:
        for _ in range(2):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection((self.host, self.port), timeout=5)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
                head, rest = _read_head(self.sock, self.buf)
                need = _content_length(head) - len(rest)
                while need > 0:
                    n = self.sock.recv_into(self.buf)
                    if not n:
                        raise ConnectionError
                    need -= n
                if b"\r\nconnection: close" in head.lower():
                    self.close()
                return int(head[9:12])
            except (OSError, ValueError):
                self.close()
        return 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def poll_until(poller: Poller, target: str, want: int, timeout: float = 10.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if poller.status(target) == want:
            return time.perf_counter()
        time.sleep(0.0005)
    raise RuntimeError(f"{target} did not answer {want} within {timeout}s")


def route_sync(linx: Client, container_id: str, port: int, proxy_url: str, trials: int) -> dict:
    """Publish-to-reachable and revoke-to-refused latency, from the API's answer to the proxy's
    (``linx`` holds the container's tenant's API key)."""
    host, pport, _ = _split(proxy_url)
    poller = Poller(host, pport)
    publish, revoke = [], []
    try:
        for i in range(trials):
            svc = linx.publish(container_id, f"sync-{i}", port, auth_mode="public")
            t_answer = time.perf_counter()
            target = f"/linx/{svc['service_id']}/small"
            publish.append((poll_until(poller, target, 200) - t_answer) * 1000)
            linx.delete_service(svc["service_id"])
            t_answer = time.perf_counter()
            revoke.append((poll_until(poller, target, 404) - t_answer) * 1000)
    finally:
        poller.close()
    return {"publish_ms": publish, "revoke_ms": revoke}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def write_routes(redis_url: str, prefix: str, count: int, port: int, batch: int = 1000) -> tuple[float, str]:
    """Write ``count`` public services straight into Redis through the schema's writers, in
    batched MULTI pipelines, laid out as a real fleet is: 100 services per container, each
    container on its own address and each service on its own port, so every service is a
    target of its own (probed, with its readiness written). Only the last service, on a
    container at 127.0.0.1, points at ``port`` (the backend). Returns the seconds it took and
    that service's id."""
    import redis

    from shared import ids
    from shared.records import Container, Service, Tenant
    from shared.schema import Schema
    from shared.tokens import SigningKey

    schema = Schema(prefix)
    client = redis.Redis.from_url(redis_url)
    t0 = time.perf_counter()
    now = int(time.time())
    tenant = Tenant(ids.new_id(ids.TENANT), "bench", now)
    pipe = client.pipeline(transaction=True)
    schema.put_tenant(pipe, tenant)
    pipe.execute()
    container = None
    pipe = client.pipeline(transaction=True)
    for i in range(count):
        last = i == count - 1
        if i % 100 == 0 or last:
            k = i // 100
            address = "127.0.0.1" if last else f"127.{1 + k // 65536}.{(k // 256) % 256}.{k % 256}"
            container = Container(
                ids.new_id(ids.CONTAINER), tenant.tenant_id, f"c{i}", address, True,
                "running", True, True, now, now,
            )  # fmt: skip
            schema.put_container(pipe, container)
        service = Service(
            service_id=ids.new_id(ids.SERVICE),
            tenant_id=tenant.tenant_id,
            container_id=container.container_id,
            name=f"s{i}",
            target_port=port if last else 20000 + i % 100,
            protocol="http",
            enable_websockets=False,
            auth_mode="public",
            created_at=now,
            updated_at=now,
            expires_at=None,
            token_key=SigningKey(ids.new_key_id(), ids.new_secret()),
        )
        schema.put_service(pipe, service)
        if (i + 1) % batch == 0:
            pipe.execute()
            pipe = client.pipeline(transaction=True)
    pipe.execute()
    client.close()
    return time.perf_counter() - t0, service.service_id
