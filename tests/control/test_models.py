"""control.models: each body and record declared once, and what is derived from it (the
validation's errors, the OpenAPI schemas, the views). Pure tables: no app, no Redis."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from control import models
from control.api.openapi import document
from control.errors import ApiError
from control.validation import parse, parse_patch, parse_service_create
from shared import records
from tests.control.test_containers import RECORD_FIELDS as CONTAINER_FIELDS
from tests.control.test_proxies import FIELDS as SPEC_PROXY_FIELDS
from tests.control.test_services import RECORD_FIELDS as SERVICE_FIELDS

BODIES = [m for m in models.COMPONENTS if issubclass(m, models.Body)]
ANSWERS = [m for m in models.COMPONENTS if issubclass(m, models.Answer)]
CONTAINER = records.Container("ctr_1", "ten_1", None, "10.0.0.1", True, "running", True, True, 5, 6)


def _schemas() -> dict:
    return document()["components"]["schemas"]


def _refused(fn, *args) -> tuple:
    with pytest.raises(ApiError) as info:
        fn(*args)
    err = info.value
    return err.status, err.code, err.field, err.message


# ----------------------------------------------------------------------- the document
def test_every_model_is_a_schema_of_the_document_and_nothing_else_is():
    assert list(_schemas()) == [m.__name__ for m in models.COMPONENTS]
    assert set(models.COMPONENTS) == {*BODIES, *ANSWERS}


@pytest.mark.parametrize("model", models.COMPONENTS, ids=lambda m: m.__name__)
def test_each_schema_has_its_models_fields(model):
    schema = _schemas()[model.__name__]
    assert list(schema.get("properties", {})) == list(model.model_fields)
    required = [name for name, field in model.model_fields.items() if field.is_required()]
    assert schema.get("required", []) == required


@pytest.mark.parametrize("model", BODIES, ids=lambda m: m.__name__)
def test_request_schemas_are_closed_and_patches_non_empty(model):
    schema = _schemas()[model.__name__]
    assert schema["additionalProperties"] is False
    if issubclass(model, models.Patch):
        assert schema["minProperties"] == 1
        assert not [p for p in schema["properties"].values() if "default" in p]


def test_every_body_and_answer_of_the_paths_is_a_model():
    bodies, answers = set(), set()
    for item in document()["paths"].values():
        for op in item.values():
            if "requestBody" in op:
                bodies.add(op["requestBody"]["content"]["application/json"]["schema"]["$ref"])
            for response in op["responses"].values():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if "$ref" in schema:
                    answers.add(schema["$ref"])
    prefix = "#/components/schemas/"
    assert bodies == {prefix + m.__name__ for m in BODIES}
    assert answers <= {prefix + m.__name__ for m in ANSWERS}


def test_enumerations_are_the_shared_ones():
    s = _schemas()
    assert s["ContainerCreate"]["properties"]["state"]["enum"] == list(records.CONTAINER_STATES)
    assert s["ContainerPatch"]["properties"]["state"]["enum"] == list(records.CONTAINER_STATES)
    assert s["Container"]["properties"]["state"]["enum"] == list(records.CONTAINER_STATES)
    for name in ("ServiceCreate", "ServicePatch", "Service"):
        assert s[name]["properties"]["auth_mode"]["enum"] == list(records.AUTH_MODES)
        assert s[name]["properties"]["cors_preflight"]["enum"] == list(records.CORS_MODES)
    assert s["ServiceCreate"]["properties"]["routing"]["enum"] == list(records.ROUTING_MODES)
    assert s["ServiceCreate"]["properties"]["protocol"]["enum"] == list(records.PROTOCOLS)
    assert s["Service"]["properties"]["status"]["enum"] == list(records.STATUSES)


def test_schemas_speak_openapi_3_0_not_json_schema_2020():
    def walk(node):
        if isinstance(node, dict):
            assert not {"const", "$defs", "title", "prefixItems"} & set(node), node
            assert node.get("type") != "null", node
            if "$ref" in node:
                assert set(node) == {"$ref"}, node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(_schemas())
    ttl = _schemas()["ServiceCreate"]["properties"]["ttl_secs"]
    assert ttl["type"] == "integer" and ttl["nullable"] is True
    assert "nullable" not in _schemas()["ServiceCreate"]["properties"]["auth_mode"]


def test_routing_default_is_left_to_the_deployment():
    assert "default" not in _schemas()["ServiceCreate"]["properties"]["routing"]
    assert parse_service_create({"name": "a", "target_port": 1}, "host").routing == "host"
    assert parse_service_create({"name": "a", "target_port": 1, "routing": "path"}, "host").routing == "path"


# --------------------------------------------------------------------------- records
def test_container_answer_is_the_stored_record():
    assert list(models.Container.model_fields) == [f.name for f in dataclasses.fields(records.Container)]
    assert set(models.Container.model_fields) == CONTAINER_FIELDS
    assert models.view(models.Container, CONTAINER) == CONTAINER.public()


def test_service_answer_is_the_record_without_secrets_plus_urls_and_status():
    stored = {f.name for f in dataclasses.fields(records.Service)}
    assert set(models.Service.model_fields) == SERVICE_FIELDS
    assert set(models.Service.model_fields) - stored == {"public_url", "websocket_url", "status"}
    assert not {"token_key", "share_links", "tenant_id"} & set(models.Service.model_fields)


def test_tenant_answers_show_key_ids_never_digests():
    tenant = records.Tenant("ten_1", "acme", 5, (records.ApiKey("key_1", "digest", 5),))
    assert models.view(models.Tenant, tenant, key_ids=["key_1"]) == tenant.public()
    assert not {"keys", "digest"} & set(models.Tenant.model_fields)


def test_share_link_answers_are_the_link_plus_its_expiry_and_use():
    stored = {f.name for f in dataclasses.fields(records.ShareLink)}
    listed = set(models.ShareLink.model_fields)
    assert listed - stored == {"expires_at", "last_used_at"}
    assert set(models.ShareLinkCreated.model_fields) - listed == {"url"}
    assert "key" not in listed


def test_proxy_answer_starts_with_the_specs_fields():
    assert list(models.Proxy.model_fields)[: len(SPEC_PROXY_FIELDS)] == SPEC_PROXY_FIELDS
    assert models.view(models.Proxy, {"proxy_id": "prx_a", "extra": 1})["pid"] is None


def test_view_refuses_fields_the_model_does_not_have():
    with pytest.raises(TypeError, match="colour"):
        models.view(models.Container, CONTAINER, colour="blue")
    with pytest.raises(AttributeError):
        models.view(models.ShareLink, CONTAINER)  # a field the source lacks is never made up


# ---------------------------------------------------------------------------- bodies
@pytest.mark.parametrize("model", BODIES, ids=lambda m: m.__name__)
def test_every_body_is_strict_closed_and_says_how_each_field_is_refused(model):
    assert model.model_config["strict"] is True and model.model_config["extra"] == "forbid"
    for field in model.model_fields.values():
        assert isinstance(models.invalid_of(field.rebuild_annotation()), models.Invalid)


def test_not_patchable_fields_are_the_resources_others():
    assert models.ContainerPatch.not_patchable == {"tenant_id", "container_id", "name"}
    assert models.ServicePatch.not_patchable == SERVICE_FIELDS - {
        "auth_mode",
        "cors_preflight",
        "strip_prefix",
    }


SERVICE = {"name": "amp", "target_port": 7001}
REFUSED = [
    # unknown fields first, in body order, before a missing or invalid one
    (
        models.ServiceCreate,
        {"target_port": "bad", "zz": 1, "aa": 2},
        "unknown_field",
        "zz",
        "unknown field 'zz'",
    ),
    (models.Empty, {"kid": "x"}, "unknown_field", "kid", "unknown field 'kid'"),
    (models.ServiceCreate, {"name": "amp"}, "missing_field", "target_port", "target_port: required"),
    # the first faulty field in the model's order
    (models.ServiceCreate, {"target_port": 0, "name": "A"}, "invalid_field", "name", None),
    # true is not an integer, nor 7001.0, nor "7001"
    *[
        (
            models.ServiceCreate,
            {**SERVICE, "target_port": v},
            "invalid_field",
            "target_port",
            "target_port: expected an integer from 1 to 65535",
        )
        for v in (True, 7001.0, "7001", None)
    ],
    (
        models.ServiceCreate,
        {**SERVICE, "ttl_secs": True},
        "invalid_field",
        "ttl_secs",
        "ttl_secs: expected an integer from 1 to 31536000 or null",
    ),
    (
        models.ServiceCreate,
        {**SERVICE, "enable_websockets": 1},
        "invalid_field",
        "enable_websockets",
        "enable_websockets: expected true or false",
    ),
    (
        models.ServiceCreate,
        {**SERVICE, "auth_mode": None},
        "invalid_field",
        "auth_mode",
        "auth_mode: expected one of 'service_token', 'public'",
    ),
    (
        models.ServiceCreate,
        {**SERVICE, "protocol": "HTTP"},
        "unsupported_protocol",
        "protocol",
        "protocol: only 'http' is supported",
    ),
    (
        models.TenantCreate,
        {"name": "a\nb"},
        "invalid_field",
        "name",
        "name: expected a string of 1 to 200 printable characters",
    ),
    (
        models.ContainerCreate,
        {"tenant_id": "t", "address": "example.com"},
        "invalid_field",
        "address",
        "address: expected an IPv4 or IPv6 address literal (no host names)",
    ),
]


@pytest.mark.parametrize(("model", "body", "code", "field", "message"), REFUSED)
def test_errors_name_the_field_with_our_codes(model, body, code, field, message):
    status, got_code, got_field, got_message = _refused(parse, model, body)
    assert (status, got_code, got_field) == (400, code, field)
    if message is not None:
        assert got_message == message


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"name": "x", "whatever": 1}, "field_not_patchable", "name"),
        ({"whatever": 1, "name": "x"}, "unknown_field", "whatever"),
        ({"ttl_secs": 0, "public_url": "x"}, "field_not_patchable", "public_url"),
        ({"auth_mode": None}, "invalid_field", "auth_mode"),  # null means nothing here
        ({"strip_prefix": None}, "invalid_field", "strip_prefix"),
    ],
)
def test_patch_errors(body, code, field):
    assert _refused(parse_patch, models.ServicePatch, body)[1:3] == (code, field)


def test_patch_tells_absent_from_null():
    assert parse_patch(models.ServicePatch, {"ttl_secs": None}) == {"ttl_secs": None}
    assert parse_patch(models.ServicePatch, {"auth_mode": "public"}) == {"auth_mode": "public"}
    assert parse_patch(models.ContainerPatch, {"address": "2001:DB8::1"}) == {"address": "2001:db8::1"}
    assert _refused(parse_patch, models.ServicePatch, {}) == (
        400,
        "empty_patch",
        None,
        "nothing to change: give at least one of ttl_secs, auth_mode, cors_preflight, strip_prefix",
    )


def test_defaults_of_a_publication():
    spec = parse_service_create(SERVICE, "path")
    assert (spec.protocol, spec.enable_websockets, spec.auth_mode, spec.ttl_secs) == (
        "http",
        False,
        "service_token",
        None,
    )
    assert (spec.routing, spec.cors_preflight, spec.strip_prefix) == ("path", "deny", True)


def test_null_is_accepted_where_it_means_something():
    assert parse(models.ShareLinkCreate, {"ttl_secs": None, "label": None}).ttl_secs is None
    registration = {k: v for k, v in CONTAINER.public().items() if k in models.ContainerCreate.model_fields}
    created = parse(models.ContainerCreate, {**registration, "container_id": None, "name": None})
    assert created.container_id is None and created.name is None


# ------------------------------------------------------------------------- the proxy
def test_the_proxy_imports_neither_pydantic_nor_the_control_plane():
    code = (
        "import importlib, pkgutil, sys, dataplane\n"
        "for m in pkgutil.iter_modules(dataplane.__path__):\n"
        "    importlib.import_module('dataplane.' + m.name)\n"
        "loaded = sorted(n for n in ('pydantic', 'flask', 'control') if n in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
