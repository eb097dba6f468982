"""Where a service is reachable: the URL derivation of SPEC sections 3 and 6, as pure functions.

The base (scheme and authority) comes from, in this order: ``APP_BASE_URL``; else
``https://$BACKEND_DOMAIN``; else the request's ``X-Forwarded-Proto`` / ``X-Forwarded-Host``;
else the request's own scheme and ``Host``. Forwarded values are client-supplied, so only
well-formed ones are used (they end up inside URLs handed back to that client).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from shared.ids import service_label

# A host name or IP literal, optionally with a port. Deliberately narrow: such values end up
# inside every URL the API returns.
HOST_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?")


def _first(value: str | None) -> str | None:
    """The first entry of a possibly comma-joined forwarded header (the client-most hop)."""
    if not value:
        return None
    first = value.split(",")[0].strip()
    return first or None


def request_base(
    app_base_url: str | None,
    backend_domain: str | None,
    headers: Mapping[str, str],
    scheme: str,
    host: str,
) -> str:
    """``scheme://authority`` for ``public_url``s, without a trailing slash."""
    if app_base_url:
        return app_base_url.rstrip("/")
    if backend_domain:
        return f"https://{backend_domain}"
    proto = (_first(headers.get("X-Forwarded-Proto")) or "").lower()
    fwd_host = _first(headers.get("X-Forwarded-Host"))
    if proto not in ("http", "https"):
        proto = scheme if scheme in ("http", "https") else "http"
    if fwd_host and HOST_RE.fullmatch(fwd_host):
        return f"{proto}://{fwd_host}"
    if host and HOST_RE.fullmatch(host):
        return f"{proto}://{host}"
    return f"{proto}://localhost"


def service_base(
    base: str, service_id: str, routing: str, service_domain: str | None, app_base_url: str | None
) -> str:
    """The token-less URL of a service, ending in ``/``.

    Path routing: ``<base>/linx/<service_id>/``. Host routing:
    ``https://<label>.<service_domain>/``, taking scheme and port from ``APP_BASE_URL`` when set.
    """
    if routing == "host" and service_domain:
        scheme, port = "https", None
        if app_base_url:
            parts = urlsplit(app_base_url)
            scheme, port = parts.scheme, parts.port
        authority = f"{service_label(service_id)}.{service_domain}"
        if port is not None:
            authority += f":{port}"
        return f"{scheme}://{authority}/"
    return f"{base}/linx/{service_id}/"


def with_token(url: str, token: str | None) -> str:
    """``url`` carrying ``token`` as ``linx_token`` (tokens are URL-safe: no escaping)."""
    return url if token is None else f"{url}?linx_token={token}"


def websocket_form(url: str) -> str:
    """The same URL with ``ws``/``wss`` for ``http``/``https``."""
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url
