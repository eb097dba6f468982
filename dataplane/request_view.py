"""What a request head asks for, before any route or clock is consulted: the service it names
and how (host name or ``/linx/<id>`` path), the path for the container, the token carriers it
holds and the cross-origin facts the access table reads. Pure.

Parsed heads are shared between identical ones (``http_head.HeadMemo``), so a view is worked
out once per distinct head and kept in the head's memo: a client that repeats a request (a
poller, a page's assets on one connection, a script with its token in every query) pays for
none of this again. What depends on the route (its cookie, so the credentials) is worked out
the first time the service is found, and is the same for every route of that service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dataplane import access, forwarding
from dataplane.exchange import can_keep
from dataplane.http_head import RequestHead
from shared import ids

if TYPE_CHECKING:
    from dataplane.routes import Route

# How the head names a service (``RequestView.kind``)
HOST, PATH, SLASH, API, NOWHERE = range(5)
LINX_PREFIX = b"/linx/"
_SAFE_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS"))
_NONE: tuple = ()  # an absent token carrier (read only)
_KEY = "view"  # its entry in ``RequestHead.memo``


class RequestView:
    """One request head, read for routing and access. Never changed once made, except for
    the credentials, filled in once by ``carried``."""

    __slots__ = (
        "host_suffix",
        "kind",
        "sid",
        "path",
        "query",
        "stripped",
        "prefix",
        "location",
        "websocket",
        "origin",
        "preflight",
        "same_origin",
        "unsafe_cross_origin",
        "query_tokens",
        "kept_query",
        "path_target",
        "stripped_target",
        "header_tokens",
        "sub_tokens",
        "ws_selected",
        "cookie_headers",
        "navigation",
        "keep",
        "request_id",
        "creds",
        "cookies",
    )

    def carried(self, route: Route) -> tuple[access.Credentials, list[bytes]]:
        """The credentials the request carries for ``route`` (the service this head names:
        any route of it has the same token cookie), and its Cookie headers without any
        ``linx_`` cookie."""
        creds = self.creds
        if creds is None:
            cookie_tokens: list[bytes] | tuple = _NONE
            cookies = self.cookie_headers
            if cookies:
                cookie_tokens, cookies = access.cookie_token(cookies, route.cookie_name)
            if self.query_tokens or self.header_tokens or cookie_tokens or self.sub_tokens:
                creds = access.pick_credentials(
                    self.query_tokens, self.header_tokens, cookie_tokens, self.sub_tokens
                )
            else:
                creds = access.NO_CREDENTIALS
            self.creds, self.cookies = creds, cookies
        return creds, self.cookies


def view_of(req: RequestHead, host_suffix: bytes | None) -> RequestView:
    """``req``'s view, made on the first call for that head (and host suffix)."""
    memo = req.memo
    if memo is None:
        memo = req.memo = {}
    view = memo.get(_KEY)
    if view is None or view.host_suffix != host_suffix:
        view = memo[_KEY] = make_view(req, host_suffix)
    return view


def make_view(req: RequestHead, host_suffix: bytes | None) -> RequestView:
    v = RequestView()
    v.host_suffix = host_suffix
    target = req.target
    qpos = target.find(b"?")
    path, query = (target, b"") if qpos < 0 else (target[:qpos], target[qpos + 1 :])
    v.path, v.query = path, query
    v.sid = v.stripped = v.prefix = v.location = None
    hostname = _hostname(req.host) if host_suffix is not None else b""
    if host_suffix is not None and hostname.endswith(host_suffix):
        label = hostname[: -len(host_suffix)]
        v.kind = HOST
        v.sid = ids.service_id_from_label(label.decode("ascii")) if b"." not in label else None
    elif path.startswith(LINX_PREFIX):
        sid_end = path.find(b"/", 6)
        sid_bytes = path[6:] if sid_end < 0 else path[6:sid_end]
        v.sid = sid_bytes.decode("ascii", "replace")
        if sid_end < 0 and sid_bytes:
            v.kind = SLASH  # the access table's first row: a redirect that reveals nothing
            v.location = path + b"/" + (b"?" + query if qpos >= 0 else b"")
        else:
            v.kind = PATH
            v.stripped = path[sid_end:] if sid_end >= 0 else b"/"
            v.prefix = path[:sid_end] if sid_end >= 0 else path
    elif path == b"/api" or path.startswith(b"/api/"):
        v.kind = API
    else:
        v.kind = NOWHERE

    websocket = v.websocket = req.upgrade == b"websocket"
    origin = v.origin = req.header(b"origin")
    v.preflight = req.method == b"OPTIONS" and origin is not None
    if v.preflight:
        v.preflight = req.header(b"access-control-request-method") is not None
    v.same_origin = True
    v.unsafe_cross_origin = False
    if websocket:
        v.same_origin = origin is not None and same_authority(origin, req.host)
    elif origin is not None and req.method not in _SAFE_METHODS:
        v.unsafe_cross_origin = not same_authority(origin, req.host)
    # A carrier that is absent costs no call: most requests have no query, no cookie and
    # (public services, or a cookie already set) no token header.
    v.query_tokens, v.kept_query = access.split_query(query) if query else (_NONE, b"")
    # What the container is asked for, its query without linx_token, as the app sees the path
    # (``path``: host routing, or an app serving under /linx/<id>/) or stripped of the prefix
    # (an empty query, "?" alone, goes on as it came: the bytes of the query are the app's)
    rest = b"?" + v.kept_query if v.kept_query or (qpos >= 0 and not query) else b""
    v.path_target = path + rest
    v.stripped_target = v.stripped + rest if v.stripped is not None else None
    header_values = req.values(access.TOKEN_HEADER)
    v.header_tokens = [h.strip() for h in header_values] if header_values else _NONE
    v.sub_tokens, v.ws_selected = forwarding.token_subprotocols(req) if websocket else (_NONE, None)
    v.cookie_headers = req.values(b"cookie")
    v.navigation = forwarding.is_navigation(req)
    v.keep = can_keep(req)
    v.request_id = req.header(b"x-request-id")
    v.creds = v.cookies = None
    return v


def _hostname(host: bytes) -> bytes:
    """``Host`` without its port, lower-cased."""
    host = host.lower()
    if host.startswith(b"["):
        return host[: host.find(b"]") + 1]
    return host.partition(b":")[0]


_DEFAULT_PORTS = {b"http": b":80", b"ws": b":80", b"https": b":443", b"wss": b":443"}


def same_authority(origin: bytes, host: bytes) -> bool:
    """Whether ``Origin`` names the host and port of ``Host``. A port is compared as the
    browser means it: the origin's scheme's default port written out (``Host: h:443`` beside
    ``Origin: https://h``, a client that always writes the port) is the same authority."""
    scheme, _, rest = origin.lower().partition(b"://")
    rest, host = rest.rstrip(b"/"), host.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None:
        rest = rest.removesuffix(default)
        host = host.removesuffix(default)
    return rest == host
