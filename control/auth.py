"""Bearer authentication: the admin token on ``/api/admin/*``, tenant API keys elsewhere.

401 means "no credentials, or ones Linx does not know"; 403 means "known credentials of the
wrong kind" (a tenant key on an admin route, the admin token on a tenant route).
"""

from __future__ import annotations

import hmac

from flask import g, request

from control.api import runtime
from control.errors import ApiError

# Longer than any key Linx issues or any sensible admin token; bounds hashing work per request.
MAX_CREDENTIAL_LENGTH = 1024
# The WSGI environ key by which the console (control.console) runs an API view as its signed-in
# tenant or operator. No client can set it: request headers arrive only as HTTP_* keys.
CONSOLE_IDENTITY = "linx.console_identity"


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="linx"'})


def bearer_token() -> str | None:
    """The credential of ``Authorization: Bearer <credential>``, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL_LENGTH:
        return None
    return credential


def _is_admin(credential: str) -> bool:
    expected = runtime().config.admin_token
    # Constant-time: the comparison must not tell an attacker how many leading bytes match.
    return hmac.compare_digest(
        credential.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def require_admin() -> None:
    """``before_request`` of the admin blueprint."""
    identity = request.environ.get(CONSOLE_IDENTITY)
    if identity is not None:
        if identity[0] == "admin":
            return
        raise ApiError(403, "forbidden", "a tenant API key cannot use the admin API")
    credential = bearer_token()
    if credential is None:
        raise _unauthorized("missing bearer token")
    if _is_admin(credential):
        return
    if runtime().store.authenticate(credential) is not None:
        raise ApiError(403, "forbidden", "a tenant API key cannot use the admin API")
    raise _unauthorized("unknown bearer token")


def require_tenant() -> None:
    """``before_request`` of the tenant blueprints: sets ``g.tenant_id``."""
    identity = request.environ.get(CONSOLE_IDENTITY)
    if identity is not None:
        if identity[0] == "tenant":
            g.tenant_id = identity[1]
            return
        raise ApiError(403, "forbidden", "the admin token cannot be used on tenant routes")
    credential = bearer_token()
    if credential is None:
        raise _unauthorized("missing bearer token")
    tenant_id = runtime().store.authenticate(credential)
    if tenant_id is not None:
        g.tenant_id = tenant_id
        return
    if _is_admin(credential):
        raise ApiError(403, "forbidden", "the admin token cannot be used on tenant routes")
    raise _unauthorized("unknown or revoked API key")


def current_tenant() -> str:
    return g.tenant_id
