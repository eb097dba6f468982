"""What crosses the proxy: the heads it sends on, and the answers it makes itself. Pure.

Request heads going to a container: hop-by-hop headers (and those named in ``Connection``)
removed, ``X-Linx-Token`` and ``linx_`` cookies removed, header names with ``_`` dropped (as
nginx does: CGI-style servers read ``X_Forwarded_For`` as ``X-Forwarded-For``), every
client-sent ``X-Forwarded-*`` and ``Forwarded`` replaced unless the peer is a trusted proxy,
and framing rewritten canonically. Response heads going to a client: hop-by-hop removed, ``Set-Cookie`` for
a ``linx_`` name dropped (a container cannot set or overwrite the proxy's cookies).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from http import HTTPStatus

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from dataplane.http_head import Framing, RequestHead, ResponseHead, split_authority

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"content-length",
    }
)
_ALWAYS_DROPPED = frozenset({b"x-linx-token", b"x-forwarded-prefix"})
# Never removed because a client named it in ``Connection``: the container must get the Host.
_NEVER_HOP_BY_HOP = frozenset({b"host"})
_FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-real-ip",
    }
)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def upstream_request_head(
    req: RequestHead, target: bytes, *, request_id: bytes | None = None, **fields
) -> bytes:
    """The head to send to the container for ``req`` (``target``: path and query to use;
    ``fields``: the other arguments of ``upstream_request_head_around``)."""
    before, after = upstream_request_head_around(req, target, request_id=request_id is not None, **fields)
    return before + request_id + after if request_id is not None else after


def upstream_request_head_around(
    req: RequestHead,
    target: bytes,
    *,
    cookies: list[bytes],
    client_ip: bytes,
    scheme: bytes,
    prefix: bytes | None,
    trusted: bool,
    websocket: bool,
    request_id: bool,
) -> tuple[bytes, bytes]:
    """The head to send to the container, in the two parts around its ``X-Request-Id`` value
    (with ``request_id``; else ``b""`` and the whole head): all of it but that value is the
    same for every request of an identical head on one connection, so a connection keeps the
    parts and joins three strings a request (``Exchange.relay``)."""
    # What depends on the client's head alone is worked out once per distinct head (parsed
    # heads are shared between identical ones, see ``http_head.HeadMemo``), and the parts for
    # one client address too: a client opening a connection per request repeats them.
    memo = req.memo
    if memo is None:
        memo = req.memo = {}
    around = memo.get("around")
    if around is None:
        around = memo["around"] = {}
    whole = (target, tuple(cookies), client_ip, scheme, prefix, trusted, websocket, request_id)
    parts = around.get(whole)
    if parts is not None:
        return parts
    if len(around) >= _AROUND_PER_HEAD:
        around.clear()  # many clients with one head: start over rather than grow
    key = trusted * 2 + request_id
    kept = memo.get(key)
    if kept is None:
        kept = memo[key] = _forwarded_fields(req, trusted, request_id)
    fields, xff, proto, host = kept
    out = [req.method, b" ", target, b" HTTP/1.1\r\n", fields]
    for cookie in cookies:
        out += (b"Cookie: ", cookie, b"\r\n")
    out += (b"X-Forwarded-For: ", xff + client_ip if xff else client_ip, b"\r\n")
    out += (b"X-Forwarded-Proto: ", proto or scheme, b"\r\n")
    out += (b"X-Forwarded-Host: ", host or req.host, b"\r\n")
    if prefix is not None:
        out += (b"X-Forwarded-Prefix: ", prefix, b"\r\n")
    before = b""
    if request_id:
        out.append(b"X-Request-Id: ")
        before = b"".join(out)
        out = [b"\r\n"]
    if websocket:
        out.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    if req.framing == Framing.LENGTH:
        out.append(b"Content-Length: %d\r\n" % req.content_length)
    elif req.framing == Framing.CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n")
    out.append(b"\r\n")
    parts = around[whole] = (before, b"".join(out))
    return parts


_AROUND_PER_HEAD = 64


def _forwarded_fields(
    req: RequestHead, trusted: bool, own_request_id: bool
) -> tuple[bytes, bytes, bytes | None, bytes | None]:
    """The client's fields that go on (joined), and a trusted peer's ``X-Forwarded-For``
    (joined, with the separator for the client's address), ``-Proto`` and ``-Host``."""
    drop = HOP_BY_HOP | (req.connection_tokens - _NEVER_HOP_BY_HOP)
    out: list[bytes] = []
    xff: list[bytes] = []
    proto = host = None
    for name, value in req.headers:
        lname = name.lower()
        if lname in drop or lname in _ALWAYS_DROPPED or b"_" in name or lname == b"cookie":
            continue
        if lname in _FORWARDING or lname[:12] == b"x-forwarded-":
            if not trusted:
                continue  # all of them, not only those the proxy sets (-Port, -Ssl, -Server ...)
            if lname == b"x-forwarded-for":
                xff.append(value)
                continue
            if lname == b"x-forwarded-proto":
                proto = proto or value
                continue
            if lname == b"x-forwarded-host":
                host = host or value
                continue
        elif lname == b"sec-websocket-protocol":
            value = strip_token_subprotocols(value)
            if not value:
                continue
        elif lname == b"x-request-id" and own_request_id:
            continue
        out += (name, b": ", value, b"\r\n")
    return b"".join(out), b"".join(v + b", " for v in xff), proto, host


def strip_token_subprotocols(value: bytes) -> bytes:
    """``Sec-WebSocket-Protocol`` without ``linx.token.*`` entries (empty when none remain)."""
    if b"linx.token." not in value:
        return value
    kept = [p.strip() for p in value.split(b",") if not p.strip().startswith(b"linx.token.")]
    return b", ".join(p for p in kept if p)


def token_subprotocols(req: RequestHead) -> tuple[list[bytes], bytes | None]:
    """The tokens carried as ``linx.token.<token>`` subprotocols, and the entry to select in
    the 101 when the client offered no other subprotocol (else None)."""
    tokens: list[bytes] = []
    others = False
    for value in req.values(b"sec-websocket-protocol"):
        for entry in value.split(b","):
            entry = entry.strip()
            if entry.startswith(b"linx.token."):
                tokens.append(entry[11:])
            elif entry:
                others = True
    selected = b"linx.token." + tokens[0] if tokens and not others else None
    return tokens, selected


def websocket_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())  # noqa: S324 (RFC 6455)


class PrefixRewrite:
    """Path routing with the prefix stripped: what keeps the browser under ``/linx/<id>/``
    (nginx's ``proxy_redirect`` and ``proxy_cookie_path``, SPEC section 7).

    - ``Location`` / ``Content-Location``: an absolute path, or an absolute or scheme-relative
      URL naming the container's own address (with the target's port, or with none), is moved
      under the prefix; relative references and other sites are left alone (the browser
      resolves the former under the prefix already).
    - ``Set-Cookie``: a ``Path`` that is absent, ``/`` or outside the prefix is moved under it
      (absent: the default path the app meant, RFC 6265 5.1.4, of the path it saw), so one
      service's cookies never reach another service's container; ``Domain`` is removed.
    """

    __slots__ = ("prefix", "target", "request_path")

    def __init__(self, prefix: bytes, target: tuple[str, int] | None, request_path: bytes) -> None:
        self.prefix = prefix
        self.target = target
        self.request_path = request_path

    def _under(self, path: bytes) -> bool:
        prefix = self.prefix
        return path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] in (b"", b"/", b"?", b"#")

    def _authorities(self) -> tuple[bytes, ...]:
        if self.target is None:
            return ()
        host, port = self.target
        name = (f"[{host}]" if ":" in host else host).lower().encode()
        # Without a port the URL still names the container's address: an app that builds its
        # own URLs from the address alone (a server name without the port it listens on)
        return (name + b":" + str(port).encode(), name)

    def location(self, value: bytes) -> bytes:
        v = value.strip()
        if v.startswith(b"//"):
            rest = v[2:]  # scheme-relative: a host of its own, maybe the container's
        elif v.startswith(b"/"):
            return v if self._under(v) else self.prefix + v
        else:
            low = v[:8].lower()
            if low.startswith(b"http://"):
                rest = v[7:]
            elif low.startswith(b"https://"):
                rest = v[8:]
            else:
                return value
        authority, path = split_authority(rest)
        if authority.lower() not in self._authorities():
            return value
        return path if self._under(path) else self.prefix + path

    def set_cookie(self, value: bytes) -> bytes:
        parts = value.split(b";")
        kept = [parts[0].strip()]
        path = None
        for attr in parts[1:]:
            attr = attr.strip()
            name = attr.partition(b"=")[0].strip().lower()
            if name == b"domain" or not attr:
                continue
            if name == b"path":
                path = attr.partition(b"=")[2].strip()  # the last one counts (RFC 6265 5.2.4)
                continue
            kept.append(attr)
        if path is None or not path.startswith(b"/"):
            path = _default_cookie_path(self.request_path)
        if not self._under(path):
            path = self.prefix + path
        kept.insert(1, b"Path=" + path)
        return b"; ".join(kept)


def _default_cookie_path(request_path: bytes) -> bytes:
    path = request_path.partition(b"?")[0]
    if not path.startswith(b"/") or path.count(b"/") == 1:
        return b"/"
    return path[: path.rfind(b"/")]


_REWRITTEN = frozenset((b"location", b"content-location", b"set-cookie"))


def client_response_head(
    resp: ResponseHead,
    *,
    framing: int,
    keep_alive: bool,
    extra: list[bytes],
    upgrade: bool = False,
    http10: bool = False,
    rewrite: PrefixRewrite | None = None,
) -> bytes:
    """The head to send to the client for the container's ``resp``, re-framed as ``framing``."""
    memo = resp.memo
    if memo is None:
        fields = resp.fields
        memo = resp.memo = {"rewritable": any(name in fields for name in _REWRITTEN)}
    if upgrade or (rewrite is not None and memo["rewritable"]):
        return _client_response_head(resp, framing, keep_alive, extra, upgrade, http10, rewrite)
    # The common case depends on the container's head and three flags alone: made once per
    # distinct head (parsed heads are shared between identical ones, see http_head.HeadMemo).
    key = framing * 4 + keep_alive * 2 + http10
    head = memo.get(key)
    if head is None:
        head = memo[key] = _client_response_head(resp, framing, keep_alive, [], False, http10, None)
    if extra:
        # The proxy's own lines (a token cookie) go last: header order carries no meaning here.
        return b"".join((head[:-2], *extra, b"\r\n"))
    return head


def _client_response_head(
    resp: ResponseHead,
    framing: int,
    keep_alive: bool,
    extra: list[bytes],
    upgrade: bool,
    http10: bool,
    rewrite: PrefixRewrite | None,
) -> bytes:
    reason = resp.reason or _reason(resp.status)
    out = [b"HTTP/1.1 %d " % resp.status, reason, b"\r\n"]
    drop = HOP_BY_HOP | resp.connection_tokens if resp.connection_tokens else HOP_BY_HOP
    had_length = False
    for name, value in resp.headers:
        lname = name.lower()
        if lname in drop:
            had_length = had_length or lname == b"content-length"
            continue
        if lname in _REWRITTEN:
            if lname == b"set-cookie":
                if value.lstrip()[:5].lower() == b"linx_":
                    continue
                if rewrite is not None:
                    value = rewrite.set_cookie(value)
            elif rewrite is not None:
                value = rewrite.location(value)
        out += (name, b": ", value, b"\r\n")
    out += extra
    if upgrade:
        out.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\n")
    elif framing == Framing.LENGTH:
        out.append(b"Content-Length: %d\r\n" % resp.content_length)
    elif framing == Framing.CHUNKED:
        out.append(b"Transfer-Encoding: chunked\r\n")
    elif had_length and resp.status >= 200 and resp.status != 204:
        # HEAD and 304 answers keep the length the full response would have had.
        out.append(b"Content-Length: %d\r\n" % resp.content_length)
    if not upgrade and not keep_alive:
        out.append(b"Connection: close\r\n")
    elif not upgrade and http10:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def informational_head(resp: ResponseHead) -> bytes:
    out = [b"HTTP/1.1 %d " % resp.status, resp.reason or _reason(resp.status), b"\r\n"]
    for name, value in resp.headers:
        if name.lower() not in HOP_BY_HOP:
            out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


# An Origin as browsers send it: "null", or scheme://host[:port] (IPv6 in brackets).
_ORIGIN = re.compile(rb"null|[a-z][a-z0-9+.\-]*://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?")


def raw_origin(raw: bytes) -> bytes | None:
    """The ``Origin`` of a head that could not be parsed (or whole: too large, too slow), so
    that the error answer carries it back as SPEC 6 asks of every error the proxy makes to a
    request with an ``Origin``: read only from one well-formed ``Origin:`` line, and only a
    value of an origin's shape (it is echoed into a response head)."""
    found = None
    for line in raw.split(b"\r\n")[1:]:
        if not line:
            break  # the end of the head
        name, colon, value = line.partition(b":")
        if colon and name.lower() == b"origin":
            if found is not None:
                return None  # two: neither can be trusted
            found = value.strip(b" \t")
    if found is None or len(found) > 300 or not _ORIGIN.fullmatch(found):
        return None
    return found


def _accept(accept: bytes) -> MIMEAccept:
    return parse_accept_header(accept.decode("latin-1"), MIMEAccept)


def prefers_html(accept: bytes | None) -> bool:
    """The client prefers HTML to JSON (SPEC section 5: then the proxy's own answers are HTML
    pages): ``Accept``'s qualities decide, each type by its most specific range (``*/*;q=0.8,
    text/html;q=0.5`` is JSON, ``text/html;q=0`` never HTML); at equal quality the one the
    client names first, by its own name (browsers list text/html first; ``*/*`` is JSON)."""
    if not accept:
        return False
    ranges = _accept(accept)
    html_q, json_q = _quality(ranges, "text/html"), _quality(ranges, "application/json")
    if html_q != json_q:
        return html_q > json_q
    if html_q <= 0:
        return False
    named = [_media_type(value) for value, _ in ranges]
    if "text/html" not in named:
        return False
    return "application/json" not in named or named.index("text/html") < named.index("application/json")


def names_html(accept: bytes | None) -> bool:
    """``Accept`` names ``text/html`` itself (not through ``*/*`` or ``text/*``), acceptable."""
    if not accept or b"text/html" not in accept.lower():
        return False  # most requests (assets, XHR): no parse (a distinct head asks this once)
    return any(_media_type(value) == "text/html" and q > 0 for value, q in _accept(accept))


def _media_type(value: str) -> str:
    return value.partition(";")[0].strip().lower()


def _quality(ranges: MIMEAccept, mime: str) -> float:
    """``mime``'s quality: that of the most specific range matching it (RFC 9110 12.5.1),
    media-type parameters aside."""
    family = mime.partition("/")[0] + "/*"
    best, quality = 0, 0.0
    for value, q in ranges:
        kind = _media_type(value)
        rank = 3 if kind == mime else 2 if kind == family else 1 if kind == "*/*" else 0
        if rank > best:
            best, quality = rank, q
    return quality


STARTING_RELOAD_SECS = 2
STARTING_PAGE = (
    "<!doctype html><html><head><meta charset=utf-8>"
    '<meta http-equiv="refresh" content="{retry}">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Starting\u2026</title>"
    "<style>body{{font-family:system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;"
    "color:#222}}code{{color:#666}}</style></head>"
    "<body><h1>The app is starting</h1>"
    "<p>It is not answering yet. This page reloads itself every {retry} seconds and shows the app "
    "as soon as it is up.</p><p><code>503 \u00b7 X-Linx-Error: {code}</code></p></body></html>\n"
)


# 503s meaning "the app is not up (yet)": a browser navigation gets the self-reloading page.
_STARTING_CODES = frozenset(("target_unavailable", "target_connect_failed", "target_connect_timeout"))


def starting(req: RequestHead, code: str) -> bool:
    """A browser navigation to an app that is not up: it gets the self-reloading page."""
    return code in _STARTING_CODES and is_navigation(req)


def is_navigation(req: RequestHead) -> bool:
    """A browser opening the page (SPEC section 5, to the letter): a GET with Sec-Fetch-Mode:
    navigate, or one whose Accept names text/html."""
    if req.method != b"GET":
        return False
    mode = req.header(b"sec-fetch-mode")
    if mode is not None and mode.strip().lower() == b"navigate":
        return True
    return names_html(req.header(b"accept"))


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    html_body: bool = False,
    keep_alive: bool = True,
    head_only: bool = False,
    origin: bytes | None = None,
    extra: list[bytes] | None = None,
    http10: bool = False,
    starting: bool = False,
) -> bytes:
    """An answer the proxy makes itself: ``X-Linx-Error``, JSON (or HTML) body, never cached.

    ``starting``: a browser navigation to an app that is not up yet gets a page saying so that
    reloads itself (SPEC section 7); status and headers are the same as without it.
    """
    if starting:
        body = STARTING_PAGE.format(code=code, retry=STARTING_RELOAD_SECS)
        ctype = b"text/html; charset=utf-8"
    elif html_body:
        body = (
            f"<!doctype html><html><head><meta charset=utf-8><title>{status} {code}</title></head>"
            f"<body><h1>{status} {html.escape(_reason(status).decode())}</h1>"
            f"<p>{html.escape(message)}</p><p><code>X-Linx-Error: {code}</code></p></body></html>\n"
        )
        ctype = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": {"code": code, "message": message}}) + "\n"
        ctype = b"application/json"
    body_bytes = body.encode()
    out = [
        b"HTTP/1.1 %d " % status,
        _reason(status),
        b"\r\n",
        b"Content-Type: ",
        ctype,
        b"\r\n",
        b"Content-Length: %d\r\n" % len(body_bytes),
        b"X-Linx-Error: ",
        code.encode(),
        b"\r\n",
        b"Cache-Control: no-store\r\n",
    ]
    if status == 503:
        out.append(b"Retry-After: 5\r\n")
    if origin is not None:
        out += (b"Access-Control-Allow-Origin: ", origin, b"\r\nVary: Origin\r\n")
    if extra:
        out += extra
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif http10:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    if not head_only:
        out.append(body_bytes)
    return b"".join(out)


def redirect_response(
    status: int,
    location: bytes,
    *,
    keep_alive: bool,
    extra: list[bytes] | None = None,
    http10: bool = False,
) -> bytes:
    out = [
        b"HTTP/1.1 %d " % status,
        _reason(status),
        b"\r\n",
        b"Location: ",
        location,
        b"\r\n",
        b"Content-Length: 0\r\n",
        b"Cache-Control: no-store\r\n",
    ]
    if extra:
        out += extra
    if not keep_alive:
        out.append(b"Connection: close\r\n")
    elif http10:
        out.append(b"Connection: keep-alive\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def forwarded_https(req: RequestHead) -> bool:
    """The client's own connection was TLS, as the first ``X-Forwarded-Proto`` (a front
    proxy's, read only when that proxy is trusted) says."""
    value = req.header(b"x-forwarded-proto")
    return value is not None and value.partition(b",")[0].strip().lower() == b"https"


def token_cookie(name: bytes, token: str, *, path: bytes, secure: bool, max_age: int | None) -> bytes:
    """The ``Set-Cookie`` header line carrying a service's token to the browser."""
    parts = [b"Set-Cookie: ", name, b"=", token.encode(), b"; Path=", path, b"; HttpOnly; SameSite=Lax"]
    if secure:
        parts.append(b"; Secure")
    if max_age is not None:
        parts.append(b"; Max-Age=%d" % max(0, max_age))
    parts.append(b"\r\n")
    return b"".join(parts)
