"""What a request head asks for is read once per distinct head, and reads as the relay did
per request: the service named by path or host, the container's path, every token carrier."""

from __future__ import annotations

import pytest

from dataplane import access, request_view
from dataplane.http_head import parse_request_head
from dataplane.request_view import API, HOST, NOWHERE, PATH, SLASH, view_of
from shared import ids
from tests.dataplane import factories

SUFFIX = b".apps.linx.test"


def head(target: str = "/", host: str = "proxy", *fields: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def view(raw: bytes, suffix: bytes | None = None) -> request_view.RequestView:
    return view_of(parse_request_head(raw, 100), suffix)


@pytest.mark.parametrize(
    ("target", "kind", "sid", "stripped", "prefix"),
    [
        ("/linx/lnx_abc/x/y?q=1", PATH, "lnx_abc", b"/x/y", b"/linx/lnx_abc"),
        ("/linx/lnx_abc/", PATH, "lnx_abc", b"/", b"/linx/lnx_abc"),
        ("/linx/", PATH, "", b"/", b"/linx/"),
        ("/linx/lnx_abc", SLASH, "lnx_abc", None, None),
        ("/api/v1/services", API, None, None, None),
        ("/api", API, None, None, None),
        ("/apix", NOWHERE, None, None, None),
        ("/", NOWHERE, None, None, None),
    ],
)
def test_the_service_a_path_names(target, kind, sid, stripped, prefix):
    v = view(head(target))
    assert (v.kind, v.sid, v.stripped, v.prefix) == (kind, sid, stripped, prefix)
    assert v.path == target.partition("?")[0].encode()


def test_the_trailing_slash_redirect_keeps_the_query():
    assert view(head("/linx/lnx_abc?a=1&b")).location == b"/linx/lnx_abc/?a=1&b"
    assert view(head("/linx/lnx_abc")).location == b"/linx/lnx_abc/"


@pytest.mark.parametrize(
    ("target", "stripped_target"),
    [
        ("/linx/lnx_abc/x?a=1&linx_token=t&b", b"/x?a=1&b"),
        ("/linx/lnx_abc/x?linx_token=t", b"/x"),  # the token was the whole query
        ("/linx/lnx_abc/x?", b"/x?"),  # an empty query goes on as it came
        ("/linx/lnx_abc/x", b"/x"),
    ],
)
def test_what_the_container_is_asked_for(target, stripped_target):
    v = view(head(target))
    assert v.stripped_target == stripped_target
    assert v.path_target == b"/linx/lnx_abc" + stripped_target


def test_a_host_name_of_its_own_names_the_service():
    sid = ids.new_id(ids.SERVICE)
    host = ids.service_label(sid) + SUFFIX.decode() + ":8443"
    v = view(head("/x?y", host), SUFFIX)
    assert (v.kind, v.sid, v.path, v.query) == (HOST, sid, b"/x", b"y")
    assert view(head("/x", "a.b" + SUFFIX.decode()), SUFFIX).sid is None  # not one label
    # Without a host suffix configured, the same head is read by its path
    assert view(head("/x", host), None).kind == NOWHERE


def test_the_view_is_made_once_per_head_and_host_suffix():
    raw = head("/linx/lnx_abc/", "h", "X-Linx-Token: t")
    first = view(raw)
    assert view(bytes(raw)) is first
    assert view(raw, SUFFIX) is not first  # another proxy configuration in the same process
    assert view(raw, SUFFIX).host_suffix == SUFFIX


def test_token_carriers_are_read_as_access_reads_them():
    raw = head(
        "/linx/lnx_abc/p?a=1&linx_token=q1&b=2",
        "h",
        "X-Linx-Token:  h1 ",
        "Cookie: linx_lnx_abc=c1; theme=dark; linx_other=z",
    )
    v = view(raw)
    assert v.query_tokens == [b"q1"] and v.kept_query == b"a=1&b=2"
    assert v.header_tokens == [b"h1"]
    route = factories.route()
    creds, cookies = v.carried(route)
    assert creds == access.Credentials("q1", "query", False)  # the query wins
    assert cookies == [b"theme=dark"]  # every linx_ cookie is removed
    assert v.carried(route) == (creds, cookies)


def test_the_cookie_is_the_one_of_the_named_service():
    route = factories.route()
    cookie = route.cookie_name.decode()
    v = view(head(f"/linx/{route.service_id}/", "h", f"Cookie: {cookie}=tok; a=b"))
    assert v.carried(route) == (access.Credentials("tok", "cookie", False), [b"a=b"])


def test_no_carrier_is_no_credentials():
    v = view(head("/linx/lnx_abc/", "h", "Cookie: a=b"))
    assert v.carried(factories.route()) == (access.NO_CREDENTIALS, [b"a=b"])


def test_ambiguous_carriers_stay_ambiguous():
    v = view(head("/linx/lnx_abc/?linx_token=a&linx_token=b"))
    assert v.carried(factories.route())[0].ambiguous


def test_websocket_subprotocol_tokens_and_origin():
    fields = (
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Protocol: linx.token.abc",
        "Origin: https://other.example",
    )
    v = view(head("/linx/lnx_abc/ws", "h", *fields))
    assert v.websocket and v.sub_tokens == [b"abc"] and v.ws_selected == b"linx.token.abc"
    assert v.same_origin is False
    same = view(head("/linx/lnx_abc/ws", "h", *fields[:3], "Origin: http://h"))
    assert same.same_origin is True


def test_unsafe_cross_origin_and_preflight():
    post = parse_request_head(
        b"POST /linx/lnx_abc/ HTTP/1.1\r\nHost: h\r\nOrigin: https://evil\r\nContent-Length: 0\r\n\r\n", 100
    )
    assert view_of(post, None).unsafe_cross_origin is True
    opts = parse_request_head(
        b"OPTIONS /linx/lnx_abc/ HTTP/1.1\r\nHost: h\r\nOrigin: https://x\r\n"
        b"Access-Control-Request-Method: PUT\r\n\r\n",
        100,
    )
    assert view_of(opts, None).preflight is True
    assert view(head("/linx/lnx_abc/", "h", "Origin: https://evil")).unsafe_cross_origin is False  # GET


def test_navigation_keep_alive_and_request_id():
    v = view(head("/linx/lnx_abc/", "h", "Sec-Fetch-Mode: navigate", "X-Request-Id: r-1"))
    assert v.navigation and v.keep and v.request_id == b"r-1"
    assert not view(head("/linx/lnx_abc/", "h", "Connection: close")).keep


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        (b"http://h", b"h", True),
        (b"http://h:80", b"h", True),
        (b"http://h", b"h:80", True),
        (b"https://h", b"h:443", True),
        (b"wss://H:443/", b"h", True),
        (b"http://[::1]:80", b"[::1]", True),
        (b"http://h:8080", b"h:8080", True),
        (b"http://h", b"h:8080", False),
        (b"http://h:8080", b"h", False),
        (b"https://h", b"h:80", False),  # the other scheme's default port is another origin
        (b"http://h:443", b"h", False),
        (b"http://other", b"h", False),
        (b"null", b"h", False),
    ],
)
def test_same_authority_reads_default_ports(origin, host, same):
    assert request_view.same_authority(origin, host) is same
