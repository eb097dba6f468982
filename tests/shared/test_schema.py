"""The stored format: every encode/decode pair round-trips, versions are checked, keys are
prefixed; plus the records' own invariants."""

from __future__ import annotations

import json

import pytest

from shared.records import ApiKey, Container, Service, ShareLink, Tenant, valid_address
from shared.schema import (
    KIND_CONTAINER,
    KIND_SERVICE,
    KIND_TENANT,
    OP_DELETE,
    OP_PUT,
    SCHEMA_VERSION,
    Keys,
    SchemaError,
    compare_positions,
    decode_container,
    decode_event,
    decode_service,
    decode_tenant,
    encode_container,
    encode_event,
    encode_service,
    encode_tenant,
)
from shared.tokens import SigningKey

TENANTS = [
    Tenant("ten_a", "acme", 1, ()),
    Tenant("ten_b", "ünïcode ☃", 2, (ApiKey("key_1", "ab" * 32, 3), ApiKey("key_2", "cd" * 32, 4))),
]
CONTAINERS = [
    Container("ctr_a", "ten_a", None, "10.1.2.3", True, "running", True, True, 1, 2),
    Container("ctr_b", "ten_a", "web", "fd00::1", False, "stopped", False, False, 3, 4),
]
SERVICES = [
    Service(
        "lnx_a",
        "ten_a",
        "ctr_a",
        "amp",
        7001,
        "http",
        True,
        "service_token",
        1,
        2,
        None,
        SigningKey("k1", bytes(range(32))),
    ),
    Service(
        "lnx_b",
        "ten_a",
        "ctr_a",
        "b",
        1,
        "http",
        False,
        "public",
        1,
        2,
        100,
        SigningKey("k2", b"\xff" * 32),
        routing="host",
        cors_preflight="passthrough",
        share_links=(
            ShareLink("shl_1", "demo", SigningKey("k3", b"\x00" * 32, 50), 5),
            ShareLink("shl_2", None, SigningKey("k4", b"\x01" * 32, None), 6),
        ),
    ),
    # every field unlike its neighbours: decode_service builds the record positionally
    Service(
        "lnx_c",
        "ten_c",
        "ctr_c",
        "c",
        8080,
        "http",
        True,
        "service_token",
        11,
        12,
        13,
        SigningKey("k5", b"\x02" * 32, 14),
        routing="host",
        cors_preflight="deny",
        strip_prefix=False,
        share_links=(ShareLink("shl_3", "x", SigningKey("k6", b"\x03" * 32, 15), 16),),
    ),
]


@pytest.mark.parametrize("tenant", TENANTS)
def test_tenant_round_trip(tenant):
    assert decode_tenant(encode_tenant(tenant)) == tenant
    assert decode_tenant(encode_tenant(tenant).encode()) == tenant


@pytest.mark.parametrize("container", CONTAINERS)
def test_container_round_trip(container):
    assert decode_container(encode_container(container)) == container


@pytest.mark.parametrize("service", SERVICES)
def test_service_round_trip(service):
    decoded = decode_service(encode_service(service))
    assert decoded == service
    assert decoded.token == service.token


@pytest.mark.parametrize(
    ("kind", "record"),
    [(KIND_TENANT, TENANTS[1]), (KIND_CONTAINER, CONTAINERS[1]), (KIND_SERVICE, SERVICES[1])],
)
def test_event_round_trip(kind, record):
    ident = getattr(record, f"{kind}_id")
    put = decode_event("5-1", encode_event(kind, OP_PUT, ident, record))
    assert (put.position, put.kind, put.op, put.id, put.record) == ("5-1", kind, OP_PUT, ident, record)
    fields = {k.encode(): v.encode() for k, v in encode_event(kind, OP_DELETE, ident).items()}
    gone = decode_event(b"6-0", fields)
    assert (gone.position, gone.op, gone.id, gone.record) == ("6-0", OP_DELETE, ident, None)


def test_records_carry_the_schema_version():
    for raw in (encode_tenant(TENANTS[0]), encode_container(CONTAINERS[0]), encode_service(SERVICES[0])):
        assert json.loads(raw)["v"] == SCHEMA_VERSION
    assert encode_event(KIND_TENANT, OP_DELETE, "x")["v"] == str(SCHEMA_VERSION)


@pytest.mark.parametrize("decode", [decode_tenant, decode_container, decode_service])
@pytest.mark.parametrize("raw", ["not json", "[]", '{"v": 999}', "{}", '{"v": 1}'])
def test_decoders_reject_bad_input(decode, raw):
    with pytest.raises(SchemaError):
        decode(raw)


@pytest.mark.parametrize(
    "fields",
    [
        {"v": "2", "kind": "tenant", "op": "delete", "id": "x"},
        {"v": "1", "kind": "planet", "op": "put", "id": "x"},
        {"v": "1", "kind": "tenant", "op": "upsert", "id": "x"},
        {"v": "1", "kind": "tenant", "op": "delete"},
    ],
)
def test_decode_event_rejects(fields):
    with pytest.raises(SchemaError):
        decode_event("1-0", fields)


def test_encode_event_rejects_unknown():
    with pytest.raises(SchemaError):
        encode_event("planet", OP_PUT, "x", None)


def test_secrets_are_stored_but_never_in_public_views():
    raw = encode_service(SERVICES[0])
    assert "secret" in raw
    assert "secret" not in json.dumps(CONTAINERS[0].public())
    assert "digest" not in json.dumps(TENANTS[1].public())


def test_keys_are_all_prefixed():
    keys = Keys("p{x}:")
    names = [
        keys.epoch,
        keys.tenants,
        keys.containers,
        keys.services,
        keys.expiry,
        keys.feed,
        keys.tenant("t"),
        keys.tenant_containers("t"),
        keys.api_key("d"),
        keys.container("c"),
        keys.container_services("c"),
        keys.service("s"),
        keys.status("s"),
        keys.link_used("s"),
    ]
    assert all(n.startswith("p{x}:") for n in names)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [("1-0", "1-0", 0), ("1-0", "1-1", -1), ("2-0", "1-9", 1), ("10-0", "9-0", 1), ("5", "5-0", 0)],
)
def test_compare_positions(a, b, order):
    assert compare_positions(a, b) == order


# ------------------------------------------------------------------------------- records
def test_container_usable_needs_running_network_ready_and_networking():
    base = CONTAINERS[0]
    assert base.usable
    from dataclasses import replace

    assert not replace(base, state="stopped").usable
    assert not replace(base, network_ready=False).usable
    assert not replace(base, networking_enabled=False).usable
    assert replace(base, exec_ready=False).usable


def test_service_expiry_and_keys():
    forever, timed = SERVICES[:2]
    assert not forever.expired(10**12)
    assert not timed.expired(99) and timed.expired(100) and timed.expired(101)
    assert set(timed.accepted_keys()) == {"k2", "k3", "k4"}
    assert forever.with_changes(name="x").name == "x"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("10.0.0.1", True),
        ("::1", True),
        ("fd00::1", True),
        ("example.com", False),
        ("10.0.0.1:80", False),
        ("", False),
        ("1.2.3", False),
    ],
)
def test_valid_address(value, ok):
    assert valid_address(value) is ok
