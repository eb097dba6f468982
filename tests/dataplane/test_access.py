"""The spec's access table (section 5), row by row, with plain values."""

from __future__ import annotations

import pytest

from dataplane import access
from dataplane.access import Credentials, decide
from shared import tokens
from tests.dataplane import factories as f

NOW = 1_000_000.0


def creds(token: str | None, source: str = "query") -> Credentials:
    return Credentials(token, source if token else None)


def test_unknown_service_is_404():
    assert decide(None, creds("x"), NOW, fresh=True) is access.NOT_FOUND


def test_token_service_without_token_is_401():
    r = f.route()
    assert decide(r, access.NO_CREDENTIALS, NOW, fresh=True) is access.TOKEN_REQUIRED


@pytest.mark.parametrize("source", ["query", "header", "cookie", "subprotocol"])
def test_valid_token_from_every_carrier_is_granted(source):
    r = f.route()
    d = decide(r, creds(f.token(r), source), NOW, fresh=True)
    assert isinstance(d, access.Grant)
    assert d.kid == r.token_key.kid and d.source == source


def test_forged_token_is_403():
    r = f.route()
    tok = f.token(r)
    forged = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    assert decide(r, creds(forged), NOW, fresh=True) is access.TOKEN_INVALID


def test_another_services_token_is_403():
    r, other = f.route(), f.route()
    assert decide(r, creds(f.token(other)), NOW, fresh=True) is access.TOKEN_INVALID


def test_rotated_out_token_is_403():
    from shared import ids
    from shared.tokens import SigningKey

    ctr = f.container()
    svc = f.service(ctr)
    r = f.route(svc, ctr)
    old = f.token(r)
    rotated = f.route(svc.with_changes(token_key=SigningKey(ids.new_key_id(), ids.new_secret())), ctr)
    assert decide(rotated, creds(old), NOW, fresh=True) is access.TOKEN_INVALID
    assert isinstance(decide(rotated, creds(f.token(rotated)), NOW, fresh=True), access.Grant)


def test_ambiguous_tokens_are_403():
    r = f.route()
    assert decide(r, Credentials(None, "query", True), NOW, fresh=True) is access.TOKEN_INVALID


def test_expired_service_is_410_even_with_a_valid_token():
    r = f.route(expires_at=int(NOW))
    assert decide(r, creds(f.token(r)), NOW, fresh=True) is access.EXPIRED
    # one second earlier it was fine
    assert isinstance(decide(r, creds(f.token(r)), NOW - 1, fresh=True), access.Grant)


def test_token_check_comes_before_expiry():
    r = f.route(expires_at=int(NOW) - 10)
    assert decide(r, access.NO_CREDENTIALS, NOW, fresh=True) is access.TOKEN_REQUIRED
    assert decide(r, creds("v1.nope.nope"), NOW, fresh=True) is access.TOKEN_INVALID


def test_public_expired_is_410():
    r = f.route(auth_mode="public", expires_at=int(NOW))
    assert decide(r, access.NO_CREDENTIALS, NOW, fresh=True) is access.EXPIRED


def test_websocket_on_disabled_service_is_403():
    r = f.route(enable_websockets=False)
    d = decide(r, creds(f.token(r)), NOW, fresh=True, websocket=True)
    assert d is access.WS_DISABLED
    assert isinstance(decide(r, creds(f.token(r)), NOW, fresh=True), access.Grant)


def test_cookie_only_websocket_needs_same_origin():
    r = f.route()
    tok = f.token(r)
    assert (
        decide(r, creds(tok, "cookie"), NOW, fresh=True, websocket=True, same_origin=False)
        is access.ORIGIN_MISMATCH
    )
    assert isinstance(
        decide(r, creds(tok, "query"), NOW, fresh=True, websocket=True, same_origin=False), access.Grant
    )


@pytest.mark.parametrize(
    "changes",
    [dict(state="stopped"), dict(state="exited"), dict(network_ready=False), dict(networking_enabled=False)],
)
def test_unusable_container_is_503(changes):
    ctr = f.container(**changes)
    r = f.route(ctr=ctr)
    assert decide(r, creds(f.token(r)), NOW, fresh=True) is access.TARGET_UNAVAILABLE


def test_exec_ready_does_not_matter():
    ctr = f.container(exec_ready=False)
    r = f.route(ctr=ctr)
    assert isinstance(decide(r, creds(f.token(r)), NOW, fresh=True), access.Grant)


def test_address_outside_allowed_networks_is_503():
    for address in ("169.254.169.254", "8.8.8.8", "192.168.1.1"):
        r = f.route(ctr=f.container(address=address))
        assert decide(r, creds(f.token(r)), NOW, fresh=True) is access.TARGET_NOT_ALLOWED


def test_missing_container_is_503():
    from dataplane.routes import Route

    svc = f.service()
    r = Route(svc, None, f.ALLOWED)
    assert decide(r, creds(svc.token), NOW, fresh=True) is access.TARGET_UNAVAILABLE


def test_stale_sync_fails_closed_for_token_services_only():
    r = f.route()
    assert decide(r, creds(f.token(r)), NOW, fresh=False) is access.SYNC_STALE
    pub = f.route(auth_mode="public")
    assert isinstance(decide(pub, access.NO_CREDENTIALS, NOW, fresh=False), access.Grant)


def test_cors_passthrough_lets_only_preflights_skip_the_token():
    r = f.route(cors_preflight="passthrough")
    assert isinstance(decide(r, access.NO_CREDENTIALS, NOW, fresh=True, preflight=True), access.Grant)
    assert decide(r, access.NO_CREDENTIALS, NOW, fresh=True) is access.TOKEN_REQUIRED
    deny = f.route(cors_preflight="deny")
    assert decide(deny, access.NO_CREDENTIALS, NOW, fresh=True, preflight=True) is access.TOKEN_REQUIRED


def test_share_link_token_valid_until_its_expiry():
    ln = f.link(expires_at=int(NOW) + 60)
    ctr = f.container()
    svc = f.service(ctr, share_links=(ln,))
    r = f.route(svc, ctr)
    tok = tokens.sign(svc.service_id, ln.key)
    d = decide(r, creds(tok), NOW, fresh=True)
    assert isinstance(d, access.Grant) and d.kid == ln.key.kid
    assert decide(r, creds(tok), NOW + 60, fresh=True) is access.TOKEN_EXPIRED


def test_token_cache_never_outlives_the_route():
    ctr = f.container()
    svc = f.service(ctr)
    r = f.route(svc, ctr)
    tok = f.token(r)
    assert isinstance(decide(r, creds(tok), NOW, fresh=True), access.Grant)
    assert r.token_cache  # cached on this Route only
    fresh_route = f.route(svc=svc.with_changes(share_links=()), ctr=ctr)
    assert not fresh_route.token_cache


# -------------------------------------------------------------------- carriers
def test_split_query_removes_only_linx_token_and_keeps_bytes_in_order():
    values, rest = access.split_query(b"a=1&linx_token=T&b=%20x&c&linx_token=U&d=")
    assert values == [b"T", b"U"]
    assert rest == b"a=1&b=%20x&c&d="


def test_split_query_catches_percent_encoded_name():
    values, rest = access.split_query(b"linx%5Ftoken=T&x=1")
    assert values == [b"T"] and rest == b"x=1"


def test_split_query_without_token_is_untouched():
    q = b"q=linx&x=%41"
    assert access.split_query(q) == ([], q)


def test_cookie_token_strips_every_linx_cookie():
    found, cleaned = access.cookie_token(
        [b"app=1; linx_lnx_abc=TOKEN; other=2", b"linx_lnx_def=X"], b"linx_lnx_abc"
    )
    assert found == [b"TOKEN"]
    assert cleaned == [b"app=1; other=2"]


def test_pick_credentials_prefers_query_and_refuses_duplicates():
    c = access.pick_credentials([b"Q"], [b"H"], [b"C"], [])
    assert (c.token, c.source) == ("Q", "query")
    c = access.pick_credentials([], [b"H"], [b"C"], [])
    assert (c.token, c.source) == ("H", "header")
    c = access.pick_credentials([], [], [b"C"], [b"S"])
    assert (c.token, c.source) == ("S", "subprotocol")
    assert access.pick_credentials([b"A", b"B"], [], [], []).ambiguous
    # the same value twice is not ambiguous
    assert access.pick_credentials([b"A", b"A"], [], [], []).token == "A"


def test_cookie_only_unsafe_request_from_another_origin_is_403():
    r = f.route()
    tok = f.token(r)
    assert (
        decide(r, creds(tok, "cookie"), NOW, fresh=True, unsafe_cross_origin=True) is access.ORIGIN_MISMATCH
    )
    # an explicit token (header, query) is not something a foreign page can borrow
    assert isinstance(
        decide(r, creds(tok, "header"), NOW, fresh=True, unsafe_cross_origin=True), access.Grant
    )
    # services that opted into cross-origin use keep it
    open_route = f.route(cors_preflight="passthrough")
    assert isinstance(
        decide(open_route, creds(f.token(open_route), "cookie"), NOW, fresh=True, unsafe_cross_origin=True),
        access.Grant,
    )


def test_credentials_are_made_once_per_carrier_and_token():
    first = access.pick_credentials([b"T1"], [], [], [])
    assert first == Credentials("T1", "query") and access.pick_credentials([b"T1"], [], [], []) is first
    assert access.pick_credentials([], [b"T1"], [], []) == Credentials("T1", "header")
    assert access.pick_credentials([b"T2", b"T2"], [], [], []) == Credentials("T2", "query")  # same twice
    assert access.pick_credentials([b"T2", b"T3"], [], [], []).ambiguous
    assert access.pick_credentials([b"\xff"], [], [], []).ambiguous  # not ASCII
    values, _ = access.split_query(b"linx_token=a%2Eb")
    assert values == [b"a.b"]


@pytest.mark.parametrize("first, second", [("query", "cookie"), ("cookie", "query")])
def test_a_grant_names_the_carrier_of_its_own_request(first, second):
    r = f.route()
    tok = f.token(r)
    one = decide(r, creds(tok, first), NOW, fresh=True)
    two = decide(r, creds(tok, second), NOW, fresh=True)
    assert (one.source, two.source) == (first, second) and one.kid == two.kid == r.token_key.kid
    assert decide(r, creds(tok, first), NOW, fresh=True) is one  # made once


def test_a_value_longer_than_any_token_is_not_kept():
    long = b"x" * 5000
    assert access.pick_credentials([long], [], [], []) == Credentials("x" * 5000, "query")
    assert ("query", long) not in access._CREDENTIALS
