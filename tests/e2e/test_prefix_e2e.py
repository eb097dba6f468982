"""SPEC section 7 prefix handling through real processes: strip_prefix, and responses that
keep the browser under /linx/<id>/ when the prefix is stripped."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
import requests

from tests.helpers.procs import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")]


def _get(pub, rest, **kw):
    return requests.get(
        pub.url(rest), headers={"X-Linx-Token": pub.token}, timeout=5, allow_redirects=False, **kw
    )


def _headers(record: dict, name: str) -> list[str]:
    return [v for n, v in record["headers"] if n.lower() == name.lower()]


def test_keep_prefix_sends_the_whole_path_and_a_patch_takes_effect_within_a_second(publish, stack):
    pub = publish(strip_prefix=False)
    assert pub.service["strip_prefix"] is False
    wait_for(lambda: _get(pub, "/echo?x=1").status_code == 200, 5)
    got = _get(pub, f"/echo?x=1&linx_token={pub.token}").json()
    assert got["target"] == f"/linx/{pub.sid}/echo?x=1"
    assert _headers(got, "X-Forwarded-Prefix") == []
    stack.api.call("PATCH", f"/api/services/{pub.sid}", pub.key, json={"strip_prefix": True}, expect=200)
    changed = time.monotonic()
    wait_for(lambda: _get(pub, "/echo").json()["target"] == "/echo", 1, interval=0.01)
    assert time.monotonic() - changed < 1.0
    assert _headers(_get(pub, "/echo").json(), "X-Forwarded-Prefix") == [f"/linx/{pub.sid}"]


def _respond(pub, status: int, *headers: str):
    query = "&".join("h=" + quote(h, safe="") for h in headers)
    return _get(pub, f"/respond?status={status}&{query}")


def test_stripped_prefix_keeps_redirects_and_cookies_under_it(publish, stack):
    pub = publish()
    wait_for(lambda: _get(pub, "/echo").status_code == 200, 5)
    prefix = f"/linx/{pub.sid}"
    backend = f"127.0.0.1:{stack.backend.port}"
    resp = _respond(
        pub,
        302,
        "Location: /lab?",
        f"Content-Location: http://{backend}/tree",
        "Set-Cookie: sess=1; Path=/; Domain=example.test; HttpOnly",
        "Set-Cookie: pref=2",
    )
    assert resp.status_code == 302
    assert resp.headers["Location"] == f"{prefix}/lab?"
    assert resp.headers["Content-Location"] == f"{prefix}/tree"
    cookies = resp.raw.headers.getlist("Set-Cookie")
    assert cookies == [f"sess=1; Path={prefix}/; HttpOnly", f"pref=2; Path={prefix}/"]


def test_keep_prefix_and_other_sites_are_left_alone(publish):
    pub = publish(strip_prefix=False)
    wait_for(lambda: _get(pub, "/echo").status_code == 200, 5)
    resp = _respond(pub, 302, "Location: /lab?", "Set-Cookie: sess=1; Path=/")
    assert resp.headers["Location"] == "/lab?"
    assert resp.raw.headers.getlist("Set-Cookie") == ["sess=1; Path=/"]
    other = publish()
    wait_for(lambda: _get(other, "/echo").status_code == 200, 5)
    assert _respond(other, 302, "Location: https://login.example/x").headers["Location"] == (
        "https://login.example/x"
    )
