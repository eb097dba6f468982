"""Revocation between requests (SPEC sections 5 and 7, issue 11 item 1), against real processes.

Clients poll a service as fast as they can over one keep-alive connection each (a
``requests.Session`` and a raw socket, on every proxy) while the service is revoked in each
way the spec names. No client may see a connection error: every answer is a 200 before the
change and the access decision after it, and an idle keep-alive connection of the service is
closed with a FIN within 2 s.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.hardening.rawhttp import Closed, RawClient
from tests.helpers.procs import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]

# Rounds per (revocation kind, proxy count); 6 kinds x 2 = 12 combinations. The first
# IDLE_ROUNDS of each also hold an idle connection and wait for its FIN (about a second each).
ROUNDS = int(os.environ.get("LINX_REVOCATION_ROUNDS", "16"))
IDLE_ROUNDS = 3


@pytest.fixture(scope="module")
def second_proxy(stack):
    proxy = stack.new_proxy().wait_ready()
    yield proxy
    proxy.stop()


@dataclass
class Poller:
    """Polls one URL over one keep-alive connection (reopened only after Connection: close)."""

    kind: str
    port: int
    path: str
    headers: dict[str, str]
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            if self.kind == "session":
                self._session()
            else:
                self._raw()
        except Exception as exc:  # noqa: BLE001 - any failure of the client is the finding
            self.errors.append(repr(exc))

    def _session(self) -> None:
        url = f"http://127.0.0.1:{self.port}{self.path}"
        with requests.Session() as session:
            while not self.stop.is_set():
                resp = session.get(url, headers=self.headers, timeout=5)
                self.answers.append((resp.status_code, resp.headers.get("X-Linx-Error")))
                if resp.headers.get("Connection", "").lower() == "close":
                    self.connections += 1

    def _raw(self) -> None:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        client = RawClient(self.port)
        self.connections += 1
        try:
            while not self.stop.is_set():
                client.send(request)
                try:
                    resp = client.read_response()
                except Closed as exc:
                    raise AssertionError(f"connection closed instead of an answer: {exc}") from None
                error = resp.header("X-Linx-Error")
                self.answers.append((resp.status, error.decode() if error else None))
                if (resp.header("Connection") or b"").lower() == b"close":
                    client.close()
                    client = RawClient(self.port)
                    self.connections += 1
        finally:
            client.close()


def _revoke(stack, pub, kind: str, link: dict | None) -> None:
    api = stack.api
    ctr = pub.container["container_id"]
    if kind == "delete":
        api.call("DELETE", f"/api/services/{pub.sid}", pub.key, expect=204)
    elif kind == "rotate":
        api.call("POST", f"/api/services/{pub.sid}/rotate-token", pub.key, expect=200)
    elif kind == "share_link_delete":
        api.call("DELETE", f"/api/services/{pub.sid}/share-links/{link['link_id']}", pub.key, expect=204)
    elif kind == "stopped":
        api.call("PATCH", f"/api/admin/containers/{ctr}", json={"state": "stopped"}, expect=200)
    elif kind == "network_not_ready":
        api.call("PATCH", f"/api/admin/containers/{ctr}", json={"network_ready": False}, expect=200)
    elif kind == "networking_disabled":
        api.call("PATCH", f"/api/admin/containers/{ctr}", json={"networking_enabled": False}, expect=200)


DECISIONS = {
    "delete": (404, "service_not_found"),
    "rotate": (403, "token_invalid"),
    "share_link_delete": (403, "token_invalid"),
    "stopped": (503, "target_unavailable"),
    "network_not_ready": (503, "target_unavailable"),
    "networking_disabled": (503, "target_unavailable"),
}


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("kind", sorted(DECISIONS))
def test_keep_alive_clients_get_answers_not_resets_on_revocation(
    stack, second_proxy, publish, kind, replicas
):
    proxies = [stack.proxy, second_proxy][:replicas]
    status, code = DECISIONS[kind]
    tried = errors = 0
    for round_no in range(ROUNDS):
        pub = publish()
        headers = {"X-Linx-Token": pub.token}
        link = None
        if kind == "share_link_delete":
            link = stack.api.call(
                "POST", f"/api/services/{pub.sid}/share-links", pub.key, json={"ttl_secs": 600}, expect=201
            ).json()
            headers = {"Cookie": f"linx_{pub.sid}={link['url'].split('linx_token=', 1)[1]}"}
        path = f"/linx/{pub.sid}/echo"
        for proxy in proxies:
            wait_for(
                lambda proxy=proxy: (
                    requests.get(proxy.url + path, headers=headers, timeout=5).status_code == 200
                ),
                5,
                what="service reachable",
            )
        idle = []
        for proxy in proxies if round_no < IDLE_ROUNDS else ():
            raw = RawClient(proxy.port)
            raw.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + _header_lines(headers) + b"\r\n")
            assert raw.read_response().status == 200
            idle.append(raw)
        pollers = [Poller(k, p.port, path, headers) for p in proxies for k in ("session", "raw")]
        threads = [threading.Thread(target=p.run, daemon=True) for p in pollers]
        for t in threads:
            t.start()
        wait_for(lambda: all(len(p.answers) >= 3 or p.errors for p in pollers), 5, what="polling")
        _revoke(stack, pub, kind, link)
        revoked_at = time.monotonic()
        try:
            wait_for(
                lambda: all(p.errors or sum(1 for a in p.answers if a[0] == status) >= 3 for p in pollers),
                1.5,
                what=f"{kind}: every poller answered {status}",
            )
        finally:
            for p in pollers:
                p.stop.set()
            for t in threads:
                t.join(10)
        for raw in idle:
            try:
                data, how = raw.read_until_close(2.5)
            finally:
                raw.close()
            assert (data, how) == (b"", "fin"), (kind, data[:200], how)
            assert time.monotonic() - revoked_at < 2.0 + 0.5  # closed within 2 s (plus polling)
        for p in pollers:
            tried += 1
            errors += len(p.errors)
            assert not p.errors, (kind, p.kind, p.errors, p.answers[-5:])
            first = next(i for i, a in enumerate(p.answers) if a[0] != 200)
            after = p.answers[first:]
            assert set(after) == {(status, code)}, (kind, p.kind, after[:10])
    print(f"revocation {kind} x{replicas} proxies: {ROUNDS} rounds, {tried} pollers, {errors} errors")


def _header_lines(headers: dict[str, str]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
