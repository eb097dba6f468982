"""Strict request-body parsing: every body is checked completely before anything is written.

Rules shared by every body: it must be JSON (415 otherwise) that parses (400 ``invalid_json``)
to an object (400 ``invalid_body``); an unknown field is a 400 ``unknown_field`` naming it; a
missing required field is a 400 ``missing_field``; a wrong type or value is a 400
``invalid_field``. Every such error names the field in its message and in ``error.field``.
JSON booleans are not integers here (``true`` is not a port), and ``null`` is accepted only
where the contract gives it a meaning. What each body holds is declared in ``control.models``;
this module reads bodies and turns the models' verdicts into those errors (``_api_error``).
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from flask import request
from pydantic import ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from control.errors import ApiError
from control.models import ID_RE, Body, Patch, ServiceCreate, invalid_of

B = TypeVar("B", bound=Body)


def valid_id(value: str) -> bool:
    return bool(ID_RE.fullmatch(value))


# ----------------------------------------------------------------------------- the body
def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object. With ``optional``, an empty body counts as ``{}``.

    Raises ApiError 415 / 400 as described in the module docstring; werkzeug raises 413 for a
    body over the configured limit while it is read here.
    """
    data = _read_body()
    if optional and not data:
        return {}
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)"
        )
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {_short(exc)}")
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return value


def _read_body() -> bytes:
    limit = request.max_content_length
    if (
        request.content_length is not None
        or limit is None
        or not request.environ.get("wsgi.input_terminated")
    ):
        # Content-Length was already checked against the limit (app before_request);
        # without it and without a server that delimits the body, werkzeug reads nothing.
        return request.get_data(cache=True)
    # Chunked body: werkzeug's limited stream would stop silently at the limit, so read one
    # byte more to tell a body of exactly the limit from a larger one.
    data = request.environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _short(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0][:200]


# -------------------------------------------------------------------------------- bodies
def parse(model: type[B], body: dict[str, Any]) -> B:
    """``body`` checked against ``model``; raises the ApiError of its first fault."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _api_error(model, exc)


def parse_patch(model: type[Patch], body: dict[str, Any]) -> dict[str, Any]:
    """The changes a PATCH body asks for: a non-empty subset of ``model``'s fields."""
    if not body:
        fields = ", ".join(model.model_fields)
        raise ApiError(400, "empty_patch", f"nothing to change: give at least one of {fields}")
    return parse(model, body).model_dump(exclude_unset=True)


def parse_service_create(body: dict[str, Any], default_routing: str) -> ServiceCreate:
    """A publication; ``routing`` absent takes the deployment's ``LINX_DEFAULT_ROUTING``."""
    spec = parse(ServiceCreate, body)
    if "routing" in spec.model_fields_set:
        return spec
    return spec.model_copy(update={"routing": default_routing})


def _api_error(model: type[Body], exc: ValidationError) -> ApiError:
    """The one mapping from pydantic's errors to ours, reporting the first fault.

    A stranger comes first, in body order (``field_not_patchable`` for a field of the resource
    a PATCH cannot change, else ``unknown_field``); then the first faulty field in the model's
    order: ``missing_field`` or the field type's ``Invalid`` code and message.
    """
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    strangers = [e for e in errors if e["type"] == "extra_forbidden"]
    first = (strangers or errors)[0]
    if not first["loc"]:
        return ApiError(400, "invalid_body", "the body does not match its schema")
    name = str(first["loc"][0])
    if strangers:
        if name in getattr(model, "not_patchable", ()):
            return ApiError(400, "field_not_patchable", f"{name}: cannot be changed", field=name)
        return ApiError(400, "unknown_field", f"unknown field {name!r}", field=name)
    if first["type"] == "missing":
        return ApiError(400, "missing_field", f"{name}: required", field=name)
    invalid = invalid_of(model.model_fields[name].rebuild_annotation())
    return ApiError(400, invalid.code, f"{name}: {invalid.message}", field=name)
