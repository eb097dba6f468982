"""One error type and one handler: every failure leaves as ``{"error": {"code", "message"}}``.

Views and the store raise ``ApiError``; Flask's own HTTP errors (404 unknown route, 405,
413, ...) are mapped by the same handler; Redis being unreachable is a 503; anything else is
a 500 whose body says nothing internal while the log keeps the traceback.
"""

from __future__ import annotations

import logging

import redis.exceptions
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from shared.redis_conn import REDIS_ERRORS

log = logging.getLogger(__name__)

# Redis answers that mean "not available right now" rather than "this code is wrong":
# connection loss and timeouts, a server still loading its data, a replica reached during a
# failover, a write refused by maxmemory (the production config uses noeviction), a cluster
# resharding or down.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    *REDIS_ERRORS,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.MasterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)

# snake_case codes for werkzeug's HTTP errors, by status.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    501: "not_implemented",
}
_HTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed on this route",
    413: "request body larger than 1 MiB",
}


class ApiError(Exception):
    """A failure with its HTTP status, snake_case code and human message.

    ``field`` names the request field at fault (validation errors); it is added to the error
    object so clients need not parse the message.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def not_found(what: str) -> ApiError:
    """The one 404 for a missing object *and* for another tenant's: identical bodies."""
    return ApiError(404, f"{what}_not_found", f"{what.replace('_', ' ')} not found")


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body: dict = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_exception(exc: Exception) -> Response:
    """Flask error handler for every exception (registered for ``Exception``)."""
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, UNAVAILABLE_ERRORS):
        log.warning("redis unavailable: %s: %s", type(exc).__name__, exc)
        return error_response(
            503,
            "redis_unavailable",
            "storage is unavailable, retry shortly",
            None,
            {"Retry-After": "1"},
        )
    log.exception("unhandled error")
    return error_response(500, "internal_error", "internal error")


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status >= 500:
        log.error("HTTP %s raised: %s", status, exc)
        return error_response(500, "internal_error", "internal error")
    code = _HTTP_CODES.get(status, "http_error")
    message = _HTTP_MESSAGES.get(status) or (exc.description or code).strip()
    # Keep protocol headers such as Allow (405); drop werkzeug's HTML content type and length.
    headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
    return error_response(status, code, message, None, headers)


def register(app: Flask) -> None:
    """Route every exception through ``handle_exception``."""
    app.register_error_handler(Exception, handle_exception)
