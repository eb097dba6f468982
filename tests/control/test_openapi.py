"""GET /api/openapi.json: a valid OpenAPI 3 document that lists exactly the app's routes,
and a bounded schemathesis run finding no 5xx and no answer that contradicts it."""

from __future__ import annotations

import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.control.test_services import RECORD_FIELDS

# Examples per operation subset and mode; tox's "long" environment raises it.
EXAMPLES = int(os.environ.get("LINX_FUZZ_EXAMPLES") or 60)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _doc(api):
    r = api.http.get("/api/openapi.json")
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    return r.json


def test_document_is_valid_openapi(api):
    doc = _doc(api)
    assert doc["openapi"].startswith("3.")
    validate(doc)


def test_document_lists_exactly_the_apps_routes(api):
    doc = _doc(api)
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    served = set()
    for rule in api.app.url_map.iter_rules():
        if rule.endpoint == "static" or not rule.rule.startswith("/api"):
            continue  # the console (/console/) is a web page, not part of the API's contract
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert documented == served


def test_every_operation_documents_its_errors_and_security(api):
    doc = _doc(api)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path == "/api/openapi.json":
                assert op["security"] == []
                continue
            codes = set(op["responses"])
            assert {"401", "403", "413", "500", "503"} <= codes, (path, method)
            if "requestBody" in op:
                assert {"400", "415"} <= codes, (path, method)
            if "{" in path:
                assert "404" in codes, (path, method)
            expected_scheme = "adminToken" if path.startswith("/api/admin/") else "apiKey"
            assert op["security"] == [{expected_scheme: []}]


def test_the_state_errors_the_server_answers_are_documented(make_api):
    """The 409/422 answers a normal session can meet, each listed on its operation."""
    api = make_api(service_domain="svc.example.test")
    doc = _doc(api)
    headers, container, service = api.setup()
    cid = container["container_id"]
    host = api.service(cid, headers, name="h2", routing="host")
    seen = [
        (
            "post",
            "/api/containers/{container_id}/services",
            api.http.post(
                f"/api/containers/{cid}/services",
                json={"name": service["name"], "target_port": 80},
                headers=headers,
            ),
        ),
        (
            "post",
            "/api/containers/{container_id}/services",
            api.http.post(
                f"/api/containers/{cid}/services",
                json={"name": "x", "target_port": 80, "routing": "host", "strip_prefix": False},
                headers=headers,
            ),
        ),
        (
            "patch",
            "/api/services/{service_id}",
            api.http.patch(
                f"/api/services/{host['service_id']}", json={"strip_prefix": False}, headers=headers
            ),
        ),
        (
            "post",
            "/api/admin/containers",
            api.http.post(
                "/api/admin/containers",
                json={k: v for k, v in container.items() if k not in ("created_at", "updated_at")},
                headers=api.admin,
            ),
        ),
    ]
    assert [r.status_code for _, _, r in seen] == [409, 422, 422, 409]
    for method, path, r in seen:
        assert str(r.status_code) in doc["paths"][path][method]["responses"], (method, path, r.json)


def test_request_schemas_refuse_unknown_fields(api):
    schemas = _doc(api)["components"]["schemas"]
    for name in (
        "TenantCreate",
        "ContainerCreate",
        "ContainerPatch",
        "ServiceCreate",
        "ServicePatch",
        "ShareLinkCreate",
        "Empty",
    ):
        assert schemas[name]["additionalProperties"] is False, name


def test_service_schema_lists_the_record_fields(api):
    service = _doc(api)["components"]["schemas"]["Service"]
    assert set(service["required"]) == RECORD_FIELDS
    assert service["properties"]["status"]["enum"] == [
        "pending",
        "ready",
        "target_unreachable",
        "expired",
        "error",
    ]


def test_responses_match_schemas_for_a_normal_session(api):
    """Each documented success answer validates against its response schema."""
    from jsonschema import Draft4Validator  # OpenAPI 3.0 schemas are close to draft 4

    doc = _doc(api)

    def check(schema_name, body):
        schema = {**doc["components"]["schemas"][schema_name], "components": doc["components"]}
        resolved = _resolve(schema, doc)
        Draft4Validator(resolved).validate(body)

    headers, container, service = api.setup(enable_websockets=True, ttl_secs=10)
    check("Container", container)
    check("Service", service)
    check(
        "ServiceList",
        api.http.get(f"/api/containers/{container['container_id']}/services", headers=headers).json,
    )
    check("TenantList", api.http.get("/api/admin/tenants", headers=api.admin).json)
    link = api.http.post(f"/api/services/{service['service_id']}/share-links", headers=headers).json
    check("ShareLinkCreated", link)
    check(
        "ShareLinkList",
        api.http.get(f"/api/services/{service['service_id']}/share-links", headers=headers).json,
    )
    check("Error", api.http.get("/api/services/lnx_none", headers=headers).json)


def _resolve(node, doc):
    """Inline $refs and turn OpenAPI 3.0 ``nullable`` into JSON Schema type lists."""
    if isinstance(node, list):
        return [_resolve(x, doc) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return _resolve(doc["components"]["schemas"][name], doc)
    out = {k: _resolve(v, doc) for k, v in node.items() if k not in ("components", "nullable")}
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


# --------------------------------------------------------------------------- schemathesis
def _run(subset, mode, headers, path_parameters, examples):
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    @given(case=subset.as_strategy(mode, headers=headers, path_parameters=path_parameters or None))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        response = case.call()
        case.validate_response(response, checks=checks)

    run()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("ids", ["real", "random"])
def test_schemathesis_finds_nothing(api, mode, ids):
    """Bounded property-based run over every operation, with real and random path ids."""
    tenant_id, headers = api.tenant()
    container = api.container(tenant_id)
    service = api.service(container["container_id"], headers)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", api.app)
    real = ids == "real"
    tenant_params = (
        {"container_id": container["container_id"], "service_id": service["service_id"]} if real else {}
    )
    admin_params = {"tenant_id": tenant_id, "container_id": container["container_id"]} if real else {}
    _run(schema.exclude(path_regex="^/api/admin"), mode, headers, tenant_params, EXAMPLES)
    _run(schema.include(path_regex="^/api/admin"), mode, api.admin, admin_params, EXAMPLES)
