"""Share links (SPEC section 6): create, list (no token), revoke, expiry bounded by the service."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from shared import ids, tokens


def _link_token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["linx_token"][0]


def _stored(schema, redis_client, sid):
    return schema.get_service(redis_client, sid)


def test_create_share_link(api, clock, schema, redis_client):
    headers, _, rec = api.setup(ttl_secs=3600)
    sid = rec["service_id"]
    r = api.http.post(
        f"/api/services/{sid}/share-links", json={"ttl_secs": 600, "label": "demo"}, headers=headers
    )
    assert r.status_code == 201
    link = r.json
    assert set(link) == {"link_id", "label", "url", "expires_at", "created_at", "last_used_at"}
    assert ids.looks_like(ids.SHARE_LINK, link["link_id"])
    assert link["label"] == "demo"
    assert link["expires_at"] == int(clock.now) + 600
    assert link["created_at"] == int(clock.now)
    assert link["last_used_at"] is None
    base = rec["public_url"].split("?")[0]
    assert link["url"].startswith(base + "?linx_token=")
    token = _link_token(link["url"])
    assert token != _link_token(rec["public_url"])
    keys = _stored(schema, redis_client, sid).accepted_keys()
    assert tokens.verify(token, sid, keys, clock.now).verdict is tokens.Verdict.VALID
    assert tokens.verify(token, sid, keys, clock.now + 600).verdict is tokens.Verdict.EXPIRED
    # the service's own token is unaffected
    own = _link_token(rec["public_url"])
    assert tokens.verify(own, sid, keys, clock.now).verdict is tokens.Verdict.VALID


def test_link_never_outlives_its_service(api, clock):
    headers, _, rec = api.setup(ttl_secs=100)
    r = api.http.post(
        f"/api/services/{rec['service_id']}/share-links", json={"ttl_secs": 1000}, headers=headers
    )
    assert r.json["expires_at"] == rec["expires_at"]


def test_link_without_ttl_lives_as_long_as_the_service(api):
    headers, _, rec = api.setup(ttl_secs=100)
    r = api.http.post(f"/api/services/{rec['service_id']}/share-links", headers=headers)
    assert r.status_code == 201
    assert r.json["expires_at"] == rec["expires_at"]
    assert r.json["label"] is None
    headers, _, forever = api.setup()
    r = api.http.post(f"/api/services/{forever['service_id']}/share-links", json={}, headers=headers)
    assert r.json["expires_at"] is None


def test_shortening_the_service_clips_its_links(api, clock, schema, redis_client):
    headers, _, rec = api.setup()
    sid = rec["service_id"]
    api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 1000}, headers=headers)
    api.http.patch(f"/api/services/{sid}", json={"ttl_secs": 50}, headers=headers)
    listed = api.http.get(f"/api/services/{sid}/share-links", headers=headers).json["share_links"]
    assert [ln["expires_at"] for ln in listed] == [int(clock.now) + 50]
    svc = _stored(schema, redis_client, sid)
    assert all(ln.key.expires_at <= svc.expires_at for ln in svc.share_links)


def test_listing_has_no_token_and_shows_last_use(api, schema, redis_client, clock):
    headers, _, rec = api.setup()
    sid = rec["service_id"]
    created = [
        api.http.post(
            f"/api/services/{sid}/share-links", json={"ttl_secs": 60, "label": f"l{i}"}, headers=headers
        ).json
        for i in range(2)
    ]
    schema.mark_links_used(redis_client, sid, {created[0]["link_id"]: int(clock.now) + 3})
    r = api.http.get(f"/api/services/{sid}/share-links", headers=headers)
    assert r.status_code == 200
    text = r.get_data(as_text=True)
    assert "linx_token" not in text and "url" not in text
    for link in created:
        assert _link_token(link["url"]) not in text
    listed = r.json["share_links"]
    assert [ln["link_id"] for ln in listed] == [c["link_id"] for c in created]
    assert listed[0]["last_used_at"] == int(clock.now) + 3
    assert listed[1]["last_used_at"] is None
    assert set(listed[0]) == {"link_id", "label", "expires_at", "created_at", "last_used_at"}


def test_revoke_one_link_only(api, schema, redis_client, clock):
    headers, _, rec = api.setup()
    sid = rec["service_id"]
    a = api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 60}, headers=headers).json
    b = api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 60}, headers=headers).json
    r = api.http.delete(f"/api/services/{sid}/share-links/{a['link_id']}", headers=headers)
    assert r.status_code == 204
    keys = _stored(schema, redis_client, sid).accepted_keys()
    assert tokens.verify(_link_token(a["url"]), sid, keys, clock.now).verdict is tokens.Verdict.INVALID
    assert tokens.verify(_link_token(b["url"]), sid, keys, clock.now).verdict is tokens.Verdict.VALID
    assert tokens.verify(_link_token(rec["public_url"]), sid, keys, clock.now).verdict is tokens.Verdict.VALID
    r = api.http.delete(f"/api/services/{sid}/share-links/{a['link_id']}", headers=headers)
    assert r.status_code == 404
    assert r.json["error"]["code"] == "share_link_not_found"


def test_expired_links_disappear_and_are_dropped_on_the_next_write(api, clock, schema, redis_client):
    headers, _, rec = api.setup()
    sid = rec["service_id"]
    old = api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 10}, headers=headers).json
    clock.advance(10)
    assert api.http.get(f"/api/services/{sid}/share-links", headers=headers).json["share_links"] == []
    assert (
        api.http.delete(f"/api/services/{sid}/share-links/{old['link_id']}", headers=headers).status_code
        == 404
    )
    api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 10}, headers=headers)
    assert [ln.link_id for ln in _stored(schema, redis_client, sid).share_links] != [old["link_id"]]
    assert old["link_id"] not in [ln.link_id for ln in _stored(schema, redis_client, sid).share_links]


def test_rotate_token_revokes_share_links(api, schema, redis_client, clock):
    headers, _, rec = api.setup()
    sid = rec["service_id"]
    link = api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 60}, headers=headers).json
    api.http.post(f"/api/services/{sid}/rotate-token", headers=headers)
    keys = _stored(schema, redis_client, sid).accepted_keys()
    assert tokens.verify(_link_token(link["url"]), sid, keys, clock.now).verdict is tokens.Verdict.INVALID
    assert api.http.get(f"/api/services/{sid}/share-links", headers=headers).json["share_links"] == []


def test_links_are_gone_with_their_service(api):
    headers, _, rec = api.setup()
    sid = rec["service_id"]
    api.http.post(f"/api/services/{sid}/share-links", json={"ttl_secs": 60}, headers=headers)
    api.http.delete(f"/api/services/{sid}", headers=headers)
    assert api.http.get(f"/api/services/{sid}/share-links", headers=headers).status_code == 404


def test_link_on_expired_service_is_422(api, clock):
    headers, _, rec = api.setup(ttl_secs=5)
    clock.advance(5)
    r = api.http.post(f"/api/services/{rec['service_id']}/share-links", json={"ttl_secs": 5}, headers=headers)
    assert r.status_code == 422
    assert r.json["error"]["code"] == "service_expired"


def test_share_link_quota_is_429(api, monkeypatch):
    import control.store

    monkeypatch.setattr(control.store, "MAX_SHARE_LINKS_PER_SERVICE", 2)
    headers, _, rec = api.setup()
    path = f"/api/services/{rec['service_id']}/share-links"
    assert api.http.post(path, json={"ttl_secs": 60}, headers=headers).status_code == 201
    assert api.http.post(path, json={"ttl_secs": 60}, headers=headers).status_code == 201
    r = api.http.post(path, json={"ttl_secs": 60}, headers=headers)
    assert r.status_code == 429
    assert r.json["error"]["code"] == "share_link_quota"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttl_secs": 0}, "ttl_secs"),
        ({"ttl_secs": "60"}, "ttl_secs"),
        ({"ttl_secs": True}, "ttl_secs"),
        ({"label": 5}, "label"),
        ({"label": ""}, "label"),
        ({"label": "x" * 201}, "label"),
        ({"url": "x"}, "url"),
    ],
)
def test_create_validation(api, body, field):
    headers, _, rec = api.setup()
    r = api.http.post(f"/api/services/{rec['service_id']}/share-links", json=body, headers=headers)
    assert r.status_code == 400
    assert r.json["error"]["field"] == field


def test_link_url_follows_host_routing(make_api):
    api = make_api(service_domain="svc.example.test")
    headers, _, rec = api.setup(routing="host")
    link = api.http.post(
        f"/api/services/{rec['service_id']}/share-links", json={"ttl_secs": 60}, headers=headers
    ).json
    assert link["url"].startswith(rec["public_url"].split("?")[0] + "?linx_token=")
    assert "/linx/" not in link["url"]
