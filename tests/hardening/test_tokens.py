"""Tokens under attack: a forgery corpus that must be refused to the last case, and a canary
token used through every carrier that must never show up where it does not belong."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import quote_from_bytes

import pytest

from tests.hardening.rawhttp import RawClient
from tests.hardening.support import assert_clean_log, reachable

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

HEADER_SAFE = frozenset(range(0x21, 0x7F))
COOKIE_SAFE = HEADER_SAFE - frozenset(b'";,\\')
WS = (
    b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


class Env:
    def __init__(self, hstack) -> None:
        self.hstack = hstack
        tenant = hstack.tenant()
        self.svc = hstack.publish(tenant=tenant, enable_websockets=True)
        self.sibling = hstack.publish(tenant=tenant)
        self.foreign = hstack.publish()  # another tenant's
        self.rotated = hstack.publish(tenant=tenant)
        self.old_token = self.rotated.token
        rec = hstack.api.call(
            "POST", f"/api/services/{self.rotated.sid}/rotate-token", self.rotated.key, expect=200
        ).json()
        self.rotated.record = rec
        self.proxy = hstack.proxy()
        for s in (self.svc, self.sibling, self.foreign, self.rotated):
            reachable(self.proxy, s)


@pytest.fixture(scope="module")
def env(hstack):
    e = Env(hstack)
    yield e
    assert_clean_log(e.proxy)
    hstack.stop_proxy(e.proxy)


def send_all(port: int, requests_: list[bytes]) -> list[int]:
    """Send each request on a keep-alive connection (reconnecting when closed); the statuses."""
    out = []
    client = RawClient(port)
    try:
        for data in requests_:
            if client.eof:
                client.close()
                client = RawClient(port)
            client.send(data)
            resp = client.read_response()
            out.append(resp.status)
            if resp.status == 101 or resp.header("Connection") == b"close":
                client.eof = True  # a tunnel (or a closing connection): the next goes on a new one
    finally:
        client.close()
    return out


def get(path: str, *headers: bytes, query: bytes = b"") -> bytes:
    target = path.encode() + b"/echo" + (b"?" + query if query else b"")
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: h.test\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    )


def carriers(path: str, cookie_name: str, token: bytes) -> list[bytes]:
    """The requests carrying ``token`` in every carrier it can be written into."""
    out = [get(path, query=b"linx_token=" + quote_from_bytes(token, safe="").encode())]
    if token and HEADER_SAFE.issuperset(token):
        out.append(get(path, b"X-Linx-Token: " + token))
        out.append(get(path, WS.rstrip(b"\r\n"), b"Sec-WebSocket-Protocol: linx.token." + token))
    if token and COOKIE_SAFE.issuperset(token):
        out.append(get(path, b"Cookie: " + cookie_name.encode() + b"=" + token))
    return out


def forgeries(env: Env) -> dict[str, list[bytes]]:
    good = env.svc.token.encode()
    path, cookie = env.svc.path, f"linx_{env.svc.sid}"
    version, kid, sig = good.split(b".")
    corpus: dict[str, list[bytes]] = {}

    flips = []
    for i in range(len(good)):
        for bit in range(8):
            forged = bytearray(good)
            forged[i] ^= 1 << bit
            flips += carriers(path, cookie, bytes(forged))
    corpus["single-bit flips"] = flips
    corpus["truncations"] = [r for k in range(len(good)) for r in carriers(path, cookie, good[:k])]
    other_kid = env.sibling.token.encode().split(b".")[1]
    tokens = [
        version + b"." + secrets.token_hex(8).encode() + b"." + sig,
        version + b"." + other_kid + b"." + sig,
        version + b".." + sig,
        version + b"." + kid + b".",
        b"v2." + kid + b"." + sig,
        b"V1." + kid + b"." + sig,
        version + b"." + kid,
        good + b".extra",
        kid + b"." + sig,
        b"." + good,
        version + b"." + kid + b"." + sig.upper(),
        version + b"." + kid + b"." + sig[::-1],
        version + b"." + kid + b"." + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"="),
        version + b"." + kid + b"." + sig + b"=",
    ]
    corpus["unknown or mangled key ids and signatures"] = [
        r for t in tokens for r in carriers(path, cookie, t)
    ]
    corpus["another service's token"] = carriers(path, cookie, env.sibling.token.encode())
    corpus["another tenant's token"] = carriers(path, cookie, env.foreign.token.encode())
    corpus["rotated-out key"] = carriers(env.rotated.path, f"linx_{env.rotated.sid}", env.old_token.encode())
    oversize = [good + b"A" * (257 - len(good)), b"A" * 257, good * 5, good + b"A" * 20000]
    corpus["oversize"] = [r for t in oversize for r in carriers(path, cookie, t)]
    bad_chars = [good + c for c in (b"+", b"/", b"=", b" ", b"\x00", b"\xc3\xa9", b"\t", b"%", b"~", b"*")]
    bad_chars += [c + good for c in (b" ", b"+", b"\x00")]
    bad_chars += [good.replace(b".", b"%2E"), good.replace(b".", b"\xef\xbc\x8e")]
    corpus["bad characters"] = [r for t in bad_chars for r in carriers(path, cookie, t)]
    bad = good[:-1] + (b"A" if good[-1:] != b"A" else b"B")
    q = quote_from_bytes
    corpus["duplicated carriers with one good token"] = [
        get(path, query=b"linx_token=" + good + b"&linx_token=" + bad),
        get(path, query=b"linx_token=" + bad + b"&linx_token=" + good),
        get(path, query=b"linx_token=" + good + b"&linx_token="),
        get(path, query=b"linx_token=&linx_token=" + good),
        get(path, query=b"linx%5Ftoken=" + bad + b"&linx_token=" + good),
        get(path, query=b"linx_token=" + good + b"&linx%5ftoken=" + bad),
        get(path, query=b"linx_token=" + good + b"&%6Cinx_token=" + q(bad, safe="").encode()),
        get(path, b"X-Linx-Token: " + good, b"X-Linx-Token: " + bad),
        get(path, b"X-Linx-Token: " + bad, b"X-Linx-Token: " + good),
        get(path, b"Cookie: " + cookie.encode() + b"=" + good + b"; " + cookie.encode() + b"=" + bad),
        get(path, b"Cookie: " + cookie.encode() + b"=" + bad, b"Cookie: " + cookie.encode() + b"=" + good),
        get(path, WS.rstrip(b"\r\n"), b"Sec-WebSocket-Protocol: linx.token." + good + b", linx.token." + bad),
        get(path, WS.rstrip(b"\r\n"), b"Sec-WebSocket-Protocol: linx.token." + bad + b", linx.token." + good),
    ]
    return corpus


def test_forgery_corpus_is_refused_to_the_last_case(env, capsys):
    good = env.svc.token.encode()
    path, cookie = env.svc.path, f"linx_{env.svc.sid}"
    # the control: the genuine token works through every carrier (so refusals mean something)
    good_statuses = send_all(env.proxy.port, carriers(path, cookie, good))
    assert good_statuses == [200, 200, 101, 200], good_statuses
    assert (
        send_all(
            env.proxy.port, carriers(env.rotated.path, f"linx_{env.rotated.sid}", env.rotated.token.encode())
        )[0]
        == 200
    )

    total = 0
    summary = []
    for name, reqs in forgeries(env).items():
        statuses = send_all(env.proxy.port, reqs)
        accepted = [s for s in statuses if s not in (401, 403)]
        assert not accepted, (name, sorted(set(statuses)))
        total += len(statuses)
        summary.append(f"{name}: {len(statuses)}")
    with capsys.disabled():
        print(f"\nforgeries: {total} requests, 0 accepted ({'; '.join(summary)})")
    assert total >= 1000


def test_canary_token_never_leaks(env, hstack):
    canary = hstack.publish(enable_websockets=True)
    token = canary.token
    tok = token.encode()
    reachable(env.proxy, canary)
    backend = hstack.backend
    backend.reset()
    p, cookie = canary.path, f"linx_{canary.sid}".encode()
    exchanges = [
        get(p, query=b"linx_token=" + tok + b"&x=1"),
        b"GET " + p.encode() + b"/page?linx_token=" + tok + b"&x=1 HTTP/1.1\r\nHost: h.test\r\n"
        b"Sec-Fetch-Mode: navigate\r\n\r\n",
        b"GET " + p.encode() + b"/?linx_token=" + tok + b" HTTP/1.1\r\nHost: h.test\r\n"
        b"Accept: text/html,application/xhtml+xml\r\n\r\n",
        get(p, b"X-Linx-Token: " + tok),
        get(p, b"Cookie: a=1; " + cookie + b"=" + tok + b"; b=2"),
        b"POST "
        + p.encode()
        + b"/upload HTTP/1.1\r\nHost: h.test\r\nX-Linx-Token: "
        + tok
        + b"\r\nContent-Length: 5\r\n\r\nhello",
        b"HEAD " + p.encode() + b"/head-test HTTP/1.1\r\nHost: h.test\r\nX-Linx-Token: " + tok + b"\r\n\r\n",
        b"GET " + p.encode() + b"/status/404 HTTP/1.1\r\nHost: h.test\r\nX-Linx-Token: " + tok + b"\r\n\r\n",
        b"GET " + p.encode() + b"/set-cookie?linx_token=" + tok + b" HTTP/1.1\r\nHost: h.test\r\n\r\n",
        b"GET "
        + p.encode()
        + b"/status/302 HTTP/1.1\r\nHost: h.test\r\nCookie: "
        + cookie
        + b"="
        + tok
        + b"\r\n\r\n",
        b"GET " + p.encode() + b"/no-such HTTP/1.1\r\nHost: h.test\r\nX-Linx-Token: " + tok + b"x\r\n\r\n",
    ]
    responses = []
    with RawClient(env.proxy.port) as c:
        for data in exchanges:
            c.send(data)
            responses.append(c.read_response(b"HEAD" if data.startswith(b"HEAD") else b"GET"))
    statuses = [r.status for r in responses]
    assert statuses == [200, 303, 303, 200, 200, 200, 200, 404, 200, 302, 403], statuses
    # WebSockets: the token as a subprotocol entry, and by cookie alone from the same origin
    for upgrade in (
        b"Sec-WebSocket-Protocol: linx.token." + tok + b", chat\r\n",
        b"Cookie: " + cookie + b"=" + tok + b"\r\nOrigin: http://h.test\r\n",
    ):
        with RawClient(env.proxy.port) as c:
            c.send(
                b"GET " + p.encode() + b"/ws?hello=hi HTTP/1.1\r\nHost: h.test\r\n" + WS + upgrade + b"\r\n"
            )
            resp = c.read_response()
            assert resp.status == 101, resp.raw
            responses.append(resp)
            while len(c.buf) < 4:
                assert c._fill()
            assert c.buf[:4] == b"\x81\x02hi"
            assert token.encode() not in c.buf
    # a malformed request carrying the canary: refused, and nowhere in the answer either
    with RawClient(env.proxy.port) as c:
        c.send(b"GET " + p.encode() + b"/?linx_token=" + tok + b" HTTP/1.1\nHost: h.test\r\n\r\n")
        responses.append(c.read_response())
        assert responses[-1].status == 400

    for resp in responses:
        for name, value in resp.headers:
            if name.lower() == b"set-cookie" and value.startswith(cookie + b"="):
                continue  # the proxy's own cookie is the token's one legitimate place
            assert tok not in value, (name, value)
        assert tok not in resp.body
    locations = [r.header("Location") for r in responses if r.header("Location")]
    assert len(locations) >= 2 and all(tok not in loc for loc in locations), locations
    assert any((r.header("Set-Cookie") or b"").startswith(cookie + b"=" + tok) for r in responses)
    # what the container received: not one byte of it, in any head
    records = backend.requests(raw=True)
    assert len(records) >= 9
    for record in records:
        raw = base64.b64decode(record["raw_head"])
        assert tok not in raw and b"linx_token" not in raw and b"linx_" + canary.sid.encode() not in raw, raw
    # nor in the proxy's log, its metrics, or the control plane's log
    assert token not in env.proxy.proc.output()
    assert token not in env.proxy.metrics()
    assert token not in hstack.control.proc.output()
