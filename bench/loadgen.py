"""HTTP load: ``wrk`` when installed, else a small asyncio generator (labelled "python-load" in
the results; it saturates long before a fast server does, so its figures are a smoke check)."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
import time
from urllib.parse import urlsplit

USE_WRK = True  # bench.__main__ turns it off for --no-wrk
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    reqs = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m)", out)
    if not reqs:
        raise RuntimeError("wrk printed no request count:\n" + out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(sock.group(i)) for i in (1, 3, 4)) if sock else 0  # "read" counts closes
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M))
    return {
        "requests": int(reqs.group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "p50_ms": _ms(lat["50"]) if "50" in lat else None,
        "p99_ms": _ms(lat["99"]) if "99" in lat else None,
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
        "tool": "wrk",
    }


def run_wrk(
    url: str, conns: int, secs: float, headers: list[str], cpus: str | None, timeout: float = 60.0
) -> dict:
    args = ["wrk", "-c", str(conns), "-t", "1", "-d", f"{max(1, round(secs))}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    args.append(url)
    if cpus and shutil.which("taskset"):
        args = ["taskset", "-c", cpus, *args]
    out = subprocess.run(args, capture_output=True, text=True, timeout=secs + timeout)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr}{out.stdout}")
    return parse_wrk(out.stdout)


class _Stats:
    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.lat: list[float] = []
        self.recording = False


async def _one_conn(host: str, port: int, request: bytes, keep: bool, stats: _Stats, stop: float, tls=None):
    reader = writer = None
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if m:
                await reader.readexactly(int(m.group(1)))
            if not head.startswith(b"HTTP/1.1 2"):
                stats.errors += 1
            if not keep:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError):
            stats.errors += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.001)
            continue
        if stats.recording:
            stats.count += 1
            stats.lat.append((time.perf_counter() - t0) * 1000.0)
    if writer is not None:
        writer.close()


async def _python_load(url: str, conns: int, secs: float, headers: list[str], warm: float) -> dict:
    parts = urlsplit(url)
    keep = not any(h.lower().replace(" ", "") == "connection:close" for h in headers)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = f"GET {target} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
    head += "".join(h + "\r\n" for h in headers) + "\r\n"
    stats = _Stats()
    tls = None
    if parts.scheme == "https":  # the bench's own certificate: not verified, as wrk does not
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    stop = time.monotonic() + warm + secs
    tasks = [
        asyncio.ensure_future(_one_conn(parts.hostname, parts.port, head.encode(), keep, stats, stop, tls))
        for _ in range(conns)
    ]
    await asyncio.sleep(warm)
    stats.recording = True
    t0 = time.monotonic()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    lat = sorted(stats.lat)
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]) if lat else (lambda q: None)
    return {
        "requests": stats.count,
        "rps": stats.count / elapsed if elapsed else 0.0,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "errors": stats.errors,
        "tool": "python-load",
    }


def http_load(url: str, conns: int, secs: float, headers: list[str] = (), cpus: str | None = None) -> dict:
    """Keep-alive (or ``Connection: close``) GET load: wrk when installed, else Python."""
    headers = list(headers)
    if USE_WRK and wrk_path():
        return run_wrk(url, conns, secs, headers, cpus)
    return asyncio.run(_python_load(url, conns, secs, headers, warm=min(0.5, secs / 4)))
