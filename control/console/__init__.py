"""The web console at ``/console/`` (SPEC section 7): tenants and operators in a browser.

Signing in exchanges an API key (or the admin token) for a server-side session: a random id
in an ``HttpOnly; SameSite=Strict; Path=/console/`` cookie, the record in Redis under the id's
SHA-256 (``shared.schema``), with an idle expiry. The key itself never reaches the browser
again. A tenant session holds the digest of the key it was opened with and is checked against
the key index on every request, so revoking the key ends it at once; an operator session holds
the digest of the admin token in force.

The page's script talks to ``/console/api/<path>``, which runs the real ``/api/<path>`` view
in-process with the session's identity: validation, tenant isolation and error answers are the
API's own. Every state-changing request must carry the session's CSRF token in
``X-CSRF-Token`` (or the sign-out form) and, when the browser sends one, an ``Origin`` equal to
the console's own.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from typing import Any

from flask import Blueprint, Response, abort, current_app, make_response, redirect, render_template, request
from werkzeug.test import run_wsgi_app

from control.api import runtime
from control.auth import CONSOLE_IDENTITY
from shared.records import AUTH_MODES, CONTAINER_STATES, CORS_MODES, ROUTING_MODES
from shared.tokens import api_key_digest

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

COOKIE = "linx_console"
IDLE_SECS = 8 * 3600  # a session unused this long ends
_SAFE = frozenset(("GET", "HEAD", "OPTIONS"))
# The forms' choices, handed to the page: declared once, in shared.records
CHOICES = {
    "auth_mode": AUTH_MODES,
    "routing": ROUTING_MODES,
    "cors_preflight": CORS_MODES,
    "state": CONTAINER_STATES,
}
_HOP = frozenset(("content-length", "transfer-encoding", "connection", "set-cookie"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _store():
    rt = runtime()
    return rt.store.schema, rt.store.client


def _session() -> tuple[str, dict[str, Any]] | None:
    """The signed-in session of this request, still valid, or None."""
    sid = request.cookies.get(COOKIE)
    if not sid or len(sid) > 128:
        return None
    digest = _digest(sid)
    schema, client = _store()
    session = schema.get_console_session(client, digest)
    if session is None:
        return None
    if session["kind"] == "tenant":
        owner = schema.tenant_key_owner(client, session["key_digest"])
        if owner is None or owner[0] != session["tenant_id"]:  # the key was revoked
            schema.delete_console_session(client, digest)
            return None
    elif not hmac.compare_digest(session["token_digest"], _digest(runtime().config.admin_token)):
        schema.delete_console_session(client, digest)
        return None
    schema.touch_console_session(client, digest, IDLE_SECS)
    return digest, session


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        # No Origin: refuse what the browser marks as coming from another site.
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    return origin.rstrip("/") == request.host_url.rstrip("/")


def _check_unsafe(session: dict[str, Any], token: str | None) -> None:
    if not _same_origin():
        abort(_refusal(403, "origin_mismatch", "this request did not come from the console's own page"))
    if not token or not hmac.compare_digest(token, session["csrf"]):
        abort(_refusal(403, "csrf_failed", "the console's CSRF token is missing or wrong; reload the page"))


def _refusal(status: int, code: str, message: str) -> Response:
    resp = make_response({"error": {"code": code, "message": message}}, status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _secure() -> bool:
    return request.scheme == "https" or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


@bp.after_request
def _headers(resp: Response) -> Response:
    # The console is never framed or sniffed, and its pages never cached.
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null" with a
    # form post, and the Origin check could not tell the console's own page from another.
    resp.headers.setdefault("Referrer-Policy", "same-origin")
    resp.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'",
    )
    if request.endpoint != "console.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/")
def index() -> Response | str:
    found = _session()
    if found is None:
        return render_template("sign_in.html", error=None)
    _, session = found
    return render_template("console.html", session=session, csrf=session["csrf"], choices=CHOICES)


@bp.post("/sign-in")
def sign_in() -> Response | tuple[str, int]:
    if not _same_origin():
        return render_template("sign_in.html", error="This sign-in did not come from the console."), 403
    credential = (request.form.get("key") or "").strip()
    schema, client = _store()
    config = runtime().config
    session: dict[str, Any]
    if credential and hmac.compare_digest(
        credential.encode("utf-8", "surrogatepass"), config.admin_token.encode("utf-8", "surrogatepass")
    ):
        session = {"kind": "admin", "token_digest": _digest(config.admin_token)}
    else:
        owner = schema.tenant_key_owner(client, api_key_digest(credential)) if credential else None
        if owner is None:
            return render_template("sign_in.html", error="Unknown or revoked key."), 401
        session = {"kind": "tenant", "tenant_id": owner[0], "key_digest": api_key_digest(credential)}
    sid = secrets.token_urlsafe(32)
    session["csrf"] = secrets.token_urlsafe(32)
    session["created_at"] = int(runtime().clock())
    schema.put_console_session(client, _digest(sid), session, IDLE_SECS)
    resp = redirect("/console/", 303)
    resp.set_cookie(
        COOKIE, sid, path="/console/", httponly=True, samesite="Strict", secure=_secure(), max_age=None
    )
    return resp


@bp.post("/sign-out")
def sign_out() -> Response:
    found = _session()
    if found is not None:
        digest, session = found
        _check_unsafe(session, request.form.get("csrf") or request.headers.get("X-CSRF-Token"))
        schema, client = _store()
        schema.delete_console_session(client, digest)
    resp = redirect("/console/", 303)
    resp.delete_cookie(COOKIE, path="/console/", httponly=True, samesite="Strict", secure=_secure())
    return resp


@bp.route("/api/<path:rest>", methods=["GET", "POST", "PATCH", "DELETE"])
def api(rest: str) -> Response:
    """``/api/<rest>`` as the signed-in tenant or operator."""
    found = _session()
    if found is None:
        return _refusal(401, "signed_out", "the console session has ended; sign in again")
    _, session = found
    if request.method not in _SAFE:
        _check_unsafe(session, request.headers.get("X-CSRF-Token"))
    if session["kind"] == "admin":
        identity: tuple[str, ...] = ("admin",)
    else:
        identity = ("tenant", session["tenant_id"])
    body = request.get_data()
    environ = {
        k: v
        for k, v in request.environ.items()
        if k not in ("HTTP_AUTHORIZATION", "HTTP_COOKIE") and not k.startswith("werkzeug.")
    }
    environ.update(
        PATH_INFO="/api/" + rest,
        SCRIPT_NAME="",
        CONTENT_LENGTH=str(len(body)),
        **{"wsgi.input": io.BytesIO(body), CONSOLE_IDENTITY: identity},
    )
    app_iter, status, headers = run_wsgi_app(current_app.wsgi_app, environ, buffered=True)
    data = b"".join(app_iter)
    resp = Response(data, status=status)
    for name, value in headers.items():
        if name.lower() not in _HOP:
            resp.headers[name] = value
    return resp
