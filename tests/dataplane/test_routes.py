"""The route table: snapshots and change events in, compact routes and change sets out."""

from __future__ import annotations

from dataclasses import replace

from dataplane import access
from dataplane.access import Credentials
from dataplane.routes import RouteTable
from shared.schema import KIND_CONTAINER, KIND_SERVICE, OP_DELETE, OP_PUT, Event, Schema
from tests.dataplane import factories as f


def event(kind: str, op: str, record=None, ident: str | None = None) -> Event:
    if ident is None:
        ident = record.service_id if kind == KIND_SERVICE else record.container_id
    return Event("1-0", kind, op, ident, record)


def table_with(*records) -> tuple[RouteTable, list[set[str]]]:
    changes: list[set[str]] = []
    table = RouteTable(f.ALLOWED, changes.append)
    table.load_snapshot(f.snapshot(*records))
    return table, changes


def test_snapshot_routes_carry_what_requests_need():
    ctr = f.container(address="10.1.2.3")
    svc = f.service(ctr, target_port=8080, auth_mode="public", routing="host")
    table, changes = table_with(ctr, svc)
    route = table.get(svc.service_id)
    assert route.target == ("10.1.2.3", 8080) and route.target_text == "10.1.2.3:8080"
    assert route.usable and route.allowed and route.public and route.host_routed
    assert route.get(svc.token_key.kid) == svc.token_key and route.get("nope") is None
    assert changes == [{svc.service_id}]


def test_services_of_one_container_are_placed_alike_on_their_own_ports():
    ctr = f.container(address="10.0.0.7")
    a, b, c = f.service(ctr, name="a"), f.service(ctr, name="b"), f.service(ctr, name="c", target_port=9)
    table, _ = table_with(ctr, a, b, c)
    ra, rb, rc = (table.get(s.service_id) for s in (a, b, c))
    assert ra.target == rb.target == ("10.0.0.7", 7001) and rc.target == ("10.0.0.7", 9)
    assert (ra.usable, ra.allowed, ra.ipv6) == (rc.usable, rc.allowed, rc.ipv6) == (True, True, False)


def test_reloading_an_identical_snapshot_changes_nothing():
    ctr = f.container()
    svc = f.service(ctr)
    table, changes = table_with(ctr, svc)
    table.load_snapshot(f.snapshot(ctr, svc))
    assert changes == [{svc.service_id}]  # only the first load reported it


def test_reloaded_snapshot_reports_changed_and_vanished_services():
    ctr = f.container()
    kept, edited, gone = f.service(ctr, name="k"), f.service(ctr, name="e"), f.service(ctr, name="g")
    table, changes = table_with(ctr, kept, edited, gone)
    table.load_snapshot(f.snapshot(ctr, kept, edited.with_changes(enable_websockets=False)))
    assert changes[-1] == {edited.service_id, gone.service_id}
    assert table.get(gone.service_id) is None and not table.get(edited.service_id).websockets


def test_container_move_retargets_its_routes_and_keeps_verified_tokens():
    ctr = f.container(address="10.0.0.1")
    a, b = f.service(ctr, name="a"), f.service(ctr, name="b", target_port=9000)
    other = f.container(address="10.0.0.2")
    c = f.service(other, name="c")
    table, changes = table_with(ctr, other, a, b, c)
    before = table.get(a.service_id)
    token = f.token(before)
    assert isinstance(access.decide(before, Credentials(token, "header"), 0, fresh=True), access.Grant)
    changed = table.apply([event(KIND_CONTAINER, OP_PUT, replace(ctr, address="10.0.0.9"))])
    assert changed == {a.service_id, b.service_id}
    assert table.get(a.service_id).target == ("10.0.0.9", 7001)
    assert table.get(b.service_id).target == ("10.0.0.9", 9000)
    assert table.get(c.service_id).target == ("10.0.0.2", 7001)
    assert table.get(a.service_id).token_cache == before.token_cache  # keys unchanged
    assert not before.same_as(table.get(a.service_id))


def test_stopped_container_makes_its_routes_unusable_and_start_restores_them():
    ctr = f.container()
    svc = f.service(ctr)
    table, _ = table_with(ctr, svc)
    table.apply([event(KIND_CONTAINER, OP_PUT, replace(ctr, state="stopped"))])
    assert not table.get(svc.service_id).usable
    table.apply([event(KIND_CONTAINER, OP_PUT, ctr)])
    assert table.get(svc.service_id).usable


def test_container_delete_cascades_to_its_services():
    ctr, keep_ctr = f.container(), f.container()
    a, b, kept = f.service(ctr, name="a"), f.service(ctr, name="b"), f.service(keep_ctr, name="k")
    table, _ = table_with(ctr, keep_ctr, a, b, kept)
    changed = table.apply([event(KIND_CONTAINER, OP_DELETE, ident=ctr.container_id)])
    assert changed == {a.service_id, b.service_id}
    assert table.get(a.service_id) is None and table.get(b.service_id) is None
    assert table.get(kept.service_id) is not None and len(table) == 1


def test_service_put_moves_it_between_containers():
    first, second = f.container(address="10.0.0.1"), f.container(address="10.0.0.2")
    svc = f.service(first)
    table, _ = table_with(first, second, svc)
    table.apply([event(KIND_SERVICE, OP_PUT, svc.with_changes(container_id=second.container_id))])
    assert table.get(svc.service_id).target == ("10.0.0.2", 7001)
    # the old container's changes no longer touch it
    assert table.apply([event(KIND_CONTAINER, OP_DELETE, ident=first.container_id)]) == set()
    assert table.get(svc.service_id) is not None


def test_service_of_a_container_not_yet_known_is_placed_when_it_arrives():
    ctr = f.container()
    svc = f.service(ctr)
    table, _ = table_with()
    table.apply([event(KIND_SERVICE, OP_PUT, svc)])
    assert table.get(svc.service_id).target is None and not table.get(svc.service_id).usable
    table.apply([event(KIND_CONTAINER, OP_PUT, ctr)])
    assert table.get(svc.service_id).target == ("127.0.0.1", 7001) and table.get(svc.service_id).usable


def test_service_delete_and_expiry():
    ctr = f.container()
    svc, brief = f.service(ctr, name="s"), f.service(ctr, name="b", expires_at=100)
    table, changes = table_with(ctr, svc, brief)
    assert table.pop_expired(99) == set()
    assert table.pop_expired(100) == {brief.service_id} and changes[-1] == {brief.service_id}
    assert table.apply([event(KIND_SERVICE, OP_DELETE, ident=svc.service_id)]) == {svc.service_id}
    assert table.get(svc.service_id) is None


def test_snapshot_convert_reads_services_as_routes(redis_client, key_prefix):
    s = Schema(key_prefix)
    ctr = f.container()
    svc = f.service(ctr)
    pipe = redis_client.pipeline()
    pipe.multi()
    s.put_container(pipe, ctr)
    s.put_service(pipe, svc)
    pipe.execute()
    table = RouteTable(f.ALLOWED)
    snap = s.snapshot(redis_client, table.snapshot_builder())
    table.load_snapshot(snap)
    route = table.get(svc.service_id)
    assert route.target == ("127.0.0.1", 7001) and route.token_key == svc.token_key
    assert snap.containers == {ctr.container_id: ctr}


def test_same_as_looks_at_every_field_but_the_token_cache():
    from dataplane.routes import Route

    ctr = f.container()
    svc = f.service(ctr)
    base = f.route(svc, ctr)
    compared = set(Route.__slots__) - {"token_cache"}
    for name in compared:
        other = base.placed(ctr, (base.usable, base.allowed, base.ipv6))
        assert other.same_as(base)
        setattr(other, name, object())  # differs from anything
        assert not other.same_as(base), name
    cached = base.placed(ctr, (base.usable, base.allowed, base.ipv6))
    cached.token_cache = {"t": "k"}
    assert cached.same_as(base)
