"""Strict HTTP/1.x message heads and body framing: pure parsing, no I/O.

Heads are parsed by llhttp (``httptools``), chosen over Twisted's parser by measurement (by an
earlier harness; its corpus is ``tests/dataplane/parser_corpus.py``), plus a validation layer of
ours for what llhttp lets through or what a proxy must refuse although a server may accept it:
bare LF or CR, obs-fold, a request line without a version, asterisk and authority-form targets, a
missing or repeated ``Host``, repeated ``Content-Length`` (even equal), ``Content-Length`` with
``Transfer-Encoding``, any transfer coding but a lone ``chunked``. A proxy that agrees with
every upstream about where a message ends is one that accepts only messages with a single
reading. An absolute-form target, which a server must accept, is read as its origin-form with
its authority as ``Host``.

Bodies are framed by our own small state machines (``ChunkedDecoder``), so the proxy always
knows exactly where a message ends and re-frames it canonically for the next hop.
"""

from __future__ import annotations

import httptools

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"
_VERSIONS = {b"HTTP/1.1": (1, 1), b"HTTP/1.0": (1, 0)}
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")
MAX_CHUNK_LINE = 4096


class HeadError(Exception):
    """The message cannot be relayed. ``status`` is what the proxy answers (400, 431, 502)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Collector:
    """Gathers the fields in order and, once, by lower-cased name: every later lookup of a
    header on the request path is a dict access instead of a scan lower-casing each name."""

    __slots__ = ("headers", "fields")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields: dict[bytes, list[bytes]] = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp keeps trailing white space; it is not part of the value (RFC 9112 5.1).
        value = value.rstrip(b" \t")
        self.headers.append((name, value))
        lname = name.lower()
        values = self.fields.get(lname)
        if values is None:
            self.fields[lname] = [value]
        else:
            values.append(value)


def _check_line_endings(head: bytes, status: int) -> None:
    crlf = head.count(CRLF)
    if head.count(b"\n") != crlf:
        raise HeadError(status, "bare_lf", "line feed without carriage return in the message head")
    if head.count(b"\r") != crlf:
        raise HeadError(status, "bare_cr", "carriage return without line feed in the message head")
    if b"\r\n " in head or b"\r\n\t" in head:
        raise HeadError(status, "obs_fold", "folded header lines (obs-fold) are not accepted")


def check_partial_line_endings(buf: bytes) -> None:
    """``_check_line_endings`` for a head still arriving (a final CR may await its LF)."""
    if buf.count(b"\n") != buf.count(CRLF):
        raise HeadError(400, "bare_lf", "line feed without carriage return in the message head")
    if buf.count(b"\r") - buf.endswith(b"\r") != buf.count(CRLF):
        raise HeadError(400, "bare_cr", "carriage return without line feed in the message head")


class Framing:
    """How a message's body is delimited."""

    NONE = 0  # no body
    LENGTH = 1  # Content-Length bytes
    CHUNKED = 2  # chunked transfer coding
    CLOSE = 3  # until the connection closes (responses only)


class RequestHead:
    """A validated request head. ``headers`` keep their received order and case."""

    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "fields",
        "host",
        "framing",
        "content_length",
        "keep_alive",
        "upgrade",
        "connection_tokens",
        "memo",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.version = (1, 1)
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields: dict[bytes, list[bytes]] = {}  # lower-cased name -> values in order
        self.host = b""
        self.framing = Framing.NONE
        self.content_length = 0
        self.keep_alive = True
        self.upgrade: bytes | None = None  # lower-cased protocol when Connection: upgrade
        self.connection_tokens: frozenset[bytes] = frozenset()
        # What ``forwarding`` derives from this head alone, kept for the next identical head
        self.memo: dict | None = None

    def header(self, lower_name: bytes) -> bytes | None:
        """The first value of a header (``lower_name`` lower-cased)."""
        values = self.fields.get(lower_name)
        return values[0] if values else None

    def values(self, lower_name: bytes) -> list[bytes]:
        """Every value of a header, in order (empty when absent)."""
        return self.fields.get(lower_name, [])

    @property
    def http10(self) -> bool:
        return self.version == (1, 0)

    @property
    def has_body(self) -> bool:
        return self.framing == Framing.CHUNKED or (self.framing == Framing.LENGTH and self.content_length > 0)


class HeadMemo:
    """Parsed heads by their exact bytes, so a head seen before costs one dict lookup.

    Parsing is a pure function of the bytes, and parsed heads are never changed after
    parsing, so one object may serve every identical head. Bounded: at ``entries`` it starts
    over (a client sending ever-new heads only costs the lookup and a clear now and then);
    heads over ``max_bytes`` are not kept. Refused heads are never kept: each raises anew.
    """

    __slots__ = ("heads", "entries", "max_bytes")

    def __init__(self, entries: int = 1024, max_bytes: int = 4096) -> None:
        self.heads: dict[bytes, object] = {}
        self.entries = entries
        self.max_bytes = max_bytes

    def get(self, head: bytes):
        return self.heads.get(head)

    def put(self, head: bytes, parsed) -> None:
        if len(head) > self.max_bytes:
            return
        heads = self.heads
        if len(heads) >= self.entries:
            heads.clear()
        heads[head] = parsed


_REQUESTS = HeadMemo()
_RESPONSES = HeadMemo()
_HEAD_RESPONSES = HeadMemo(256)  # answers to HEAD requests: no body whatever the framing says


def parse_request_head(head: bytes, max_headers: int) -> RequestHead:
    """Parse ``head`` (ending in CRLF CRLF). Raise HeadError(400 or 431) on anything doubtful.
    A head identical to one seen before (same bytes, same limit) is not parsed again."""
    hit = _REQUESTS.get(head)
    if hit is not None and hit[0] == max_headers:
        return hit[1]
    req = _parse_request_head(head, max_headers)
    _REQUESTS.put(head, (max_headers, req))
    return req


def _parse_request_head(head: bytes, max_headers: int) -> RequestHead:
    _check_line_endings(head, 400)
    line_end = head.find(CRLF)
    parts = head[:line_end].split(b" ")
    if len(parts) != 3:
        raise HeadError(400, "bad_request_line", "the request line must be: METHOD target HTTP/1.x")
    method, target, version_text = parts
    version = _VERSIONS.get(version_text)
    if version is None:
        raise HeadError(400, "unsupported_version", "only HTTP/1.0 and HTTP/1.1 are supported")
    if not method or not _TCHAR.issuperset(method):
        raise HeadError(400, "bad_method", "the method is not a token")
    authority = None
    if not target.startswith(b"/"):
        target, authority = _absolute_form(target)
    if b"#" in target:
        raise HeadError(400, "bad_request_target", "a request target carries no fragment")
    if head.count(CRLF) - 2 > max_headers:
        raise HeadError(431, "too_many_headers", f"more than {max_headers} header fields")

    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # llhttp stops at an upgrade; the head itself was parsed completely
    except httptools.HttpParserError as exc:
        raise HeadError(400, "malformed_head", f"malformed request head: {exc}")

    req = RequestHead()
    req.method = method
    req.target = target
    req.version = version
    req.headers = collector.headers
    fields = req.fields = collector.fields
    hosts = fields.get(b"host", ())
    lengths = fields.get(b"content-length", ())
    codings = fields.get(b"transfer-encoding", ())
    connection = _tokens(fields.get(b"connection", ()))
    upgrade_value = fields.get(b"upgrade")
    if len(hosts) != 1:
        raise HeadError(
            400, "bad_host", "exactly one Host header is required" if hosts else "missing Host header"
        )
    req.host = hosts[0]
    if not req.host or not _valid_host(req.host):
        raise HeadError(400, "bad_host", "the Host header is not a valid host[:port]")
    if authority is not None and authority != req.host:
        # RFC 9112 3.2.2 and 7.2: the target's authority replaces Host, for routing and for
        # the Host the container receives
        req.host = authority
        fields[b"host"] = [authority]
        req.headers = [(n, authority) if n.lower() == b"host" else (n, v) for n, v in req.headers]
    if codings:
        if lengths:
            raise HeadError(400, "ambiguous_framing", "both Content-Length and Transfer-Encoding")
        if version == (1, 0):
            raise HeadError(400, "bad_transfer_encoding", "Transfer-Encoding in an HTTP/1.0 request")
        if len(codings) != 1 or codings[0].strip().lower() != b"chunked":
            raise HeadError(
                400, "bad_transfer_encoding", "only a single 'chunked' transfer coding is accepted"
            )
        req.framing = Framing.CHUNKED
    elif lengths:
        if len(lengths) != 1:
            raise HeadError(400, "ambiguous_framing", "more than one Content-Length header")
        req.content_length = _parse_length(lengths[0], 400)
        req.framing = Framing.LENGTH
    req.connection_tokens = connection
    if version == (1, 1):
        req.keep_alive = b"close" not in connection
    else:
        req.keep_alive = b"keep-alive" in connection
    if b"upgrade" in connection and upgrade_value and upgrade_value[-1].strip():
        req.upgrade = upgrade_value[-1].strip().lower()
    return req


def _absolute_form(target: bytes) -> tuple[bytes, bytes]:
    """An absolute-form target (``http://host[:port]/path?query``, RFC 9112 3.2.2, which a
    server must accept) as its origin-form and its authority; any other form is refused."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise HeadError(
            400, "bad_request_target", "only origin-form and absolute-form request targets are accepted"
        )
    authority, path = split_authority(rest)
    if not authority or not _valid_host(authority):
        raise HeadError(400, "bad_request_target", "the target's authority is not a valid host[:port]")
    return path, authority


def split_authority(rest: bytes) -> tuple[bytes, bytes]:
    """A URL after its ``scheme://`` (or ``//``) as its authority and its path, query and
    fragment, the path starting with ``/``."""
    end = len(rest)
    for stop in (b"/", b"?", b"#"):
        i = rest.find(stop)
        if 0 <= i < end:
            end = i
    path = rest[end:]
    return rest[:end], (path if path.startswith(b"/") else b"/" + path)


def _tokens(values) -> frozenset[bytes]:
    """The comma-separated tokens of a list-valued field, lower-cased (``Connection``)."""
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for value in values for t in value.split(b","))


def _valid_host(host: bytes) -> bool:
    if host.startswith(b"["):
        end = host.find(b"]")
        if end < 0:
            return False
        rest = host[end + 1 :]
        return not rest or (rest[:1] == b":" and rest[1:].isdigit())
    name, _, port = host.partition(b":")
    if port and not port.isdigit():
        return False
    return bool(name) and all(c in _HOSTCHARS for c in name)


_HOSTCHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%")


def _parse_length(value: bytes, status: int) -> int:
    value = value.strip()
    if not value.isdigit() or len(value) > 18:
        raise HeadError(status, "bad_content_length", "Content-Length is not a decimal number")
    return int(value)


class ResponseHead:
    __slots__ = (
        "status",
        "reason",
        "version",
        "headers",
        "fields",
        "connection_tokens",
        "framing",
        "content_length",
        "keep_alive",
        "memo",
    )

    def __init__(self) -> None:
        self.status = 0
        self.reason = b""
        self.version = (1, 1)
        self.headers: list[tuple[bytes, bytes]] = []
        self.fields: dict[bytes, list[bytes]] = {}
        self.connection_tokens: frozenset[bytes] = frozenset()
        self.framing = Framing.NONE
        self.content_length = 0
        self.keep_alive = True
        self.memo: dict | None = None  # client heads made from it, by how they were framed

    def header(self, lower_name: bytes) -> bytes | None:
        """The first value of a header (``lower_name`` lower-cased)."""
        values = self.fields.get(lower_name)
        return values[0] if values else None


def parse_response_head(head: bytes, request_method: bytes) -> ResponseHead:
    """Parse an upstream response head; any doubt is a HeadError(502). Identical heads (a
    container's answers differ mostly in ``Date``, once a second) are parsed once."""
    memo = _HEAD_RESPONSES if request_method == b"HEAD" else _RESPONSES
    resp = memo.get(head)
    if resp is None:
        resp = _parse_response_head(head, request_method)
        memo.put(head, resp)
    return resp


def _parse_response_head(head: bytes, request_method: bytes) -> ResponseHead:
    _check_line_endings(head, 502)
    line_end = head.find(CRLF)
    version_text, _, rest = head[:line_end].partition(b" ")
    status_text, _, reason = rest.partition(b" ")
    version = _VERSIONS.get(version_text)
    if version is None or len(status_text) != 3 or not status_text.isdigit():
        raise HeadError(502, "bad_upstream_response", "the container sent an invalid status line")
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError as exc:
        raise HeadError(502, "bad_upstream_response", f"invalid response head from the container: {exc}")
    resp = ResponseHead()
    resp.status = int(status_text)
    resp.reason = reason
    resp.version = version
    resp.headers = collector.headers
    fields = resp.fields = collector.fields
    lengths = fields.get(b"content-length", ())
    codings = fields.get(b"transfer-encoding", ())
    connection = resp.connection_tokens = _tokens(fields.get(b"connection", ()))
    resp.keep_alive = (b"close" not in connection) if version == (1, 1) else (b"keep-alive" in connection)
    bodiless = request_method == b"HEAD" or resp.status < 200 or resp.status in (204, 304)
    if codings:
        if lengths:
            raise HeadError(502, "bad_upstream_response", "both Content-Length and Transfer-Encoding")
        if len(codings) != 1 or codings[0].strip().lower() != b"chunked":
            raise HeadError(502, "bad_upstream_response", "unsupported transfer coding from the container")
        resp.framing = Framing.NONE if bodiless else Framing.CHUNKED
    elif lengths:
        if len(lengths) != 1 and len(set(v.strip() for v in lengths)) != 1:
            raise HeadError(502, "bad_upstream_response", "conflicting Content-Length headers")
        resp.content_length = _parse_length(lengths[0], 502)
        resp.framing = Framing.NONE if bodiless else Framing.LENGTH
    else:
        resp.framing = Framing.NONE if bodiless else Framing.CLOSE
        if resp.framing == Framing.CLOSE:
            resp.keep_alive = False
    return resp


class ChunkedDecoder:
    """Incremental, strict decoder of a chunked body.

    ``feed(data)`` returns ``(pieces, rest)``: the decoded payload pieces found so far and, once
    the body (with its trailer section) has ended, the bytes after it (else None). Trailer
    fields are validated and dropped. Raises HeadError(status) on any malformed framing.
    """

    __slots__ = ("status", "_state", "_remaining", "_line", "_trailer_bytes", "max_trailer")

    _SIZE, _DATA, _DATA_CRLF, _TRAILER, _DONE = range(5)

    def __init__(self, status: int = 400, max_trailer: int = 32768) -> None:
        self.status = status
        self._state = self._SIZE
        self._remaining = 0
        self._line = b""
        self._trailer_bytes = 0
        self.max_trailer = max_trailer

    @property
    def done(self) -> bool:
        return self._state == self._DONE

    def _fail(self, message: str) -> HeadError:
        return HeadError(self.status, "bad_chunked_body", message)

    def feed(self, data: bytes) -> tuple[list[bytes], bytes | None]:
        if self._state == self._DONE:
            return [], data
        pieces: list[bytes] = []
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state == self._DATA:
                take = min(self._remaining, n - pos)
                pieces.append(data[pos : pos + take] if (pos or take != n) else data)
                pos += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = self._DATA_CRLF
                continue
            # line-oriented states: size line, CRLF after data, trailer lines
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > MAX_CHUNK_LINE:
                    raise self._fail("chunk line too long")
                pos = n
                break
            line = self._line + data[pos : end + 1]
            self._line = b""
            pos = end + 1
            if len(line) > MAX_CHUNK_LINE:
                raise self._fail("chunk line too long")
            if not line.endswith(CRLF) or b"\r" in line[:-2]:
                raise self._fail("chunk lines must end with CRLF")
            line = line[:-2]
            if state == self._DATA_CRLF:
                if line:
                    raise self._fail("chunk data longer than its size")
                self._state = self._SIZE
            elif state == self._SIZE:
                size_text, _, ext = line.partition(b";")
                if not size_text or len(size_text) > 15 or not _HEX.issuperset(size_text):
                    raise self._fail("invalid chunk size")
                if ext and not _valid_chunk_ext(ext):
                    raise self._fail("invalid chunk extension")
                size = int(size_text, 16)
                if size == 0:
                    self._state = self._TRAILER
                else:
                    self._remaining = size
                    self._state = self._DATA
            elif state == self._TRAILER:
                if not line:
                    self._state = self._DONE
                    return pieces, data[pos:]
                self._trailer_bytes += len(line) + 2
                name, colon, _value = line.partition(b":")
                if (
                    not colon
                    or not name
                    or not _TCHAR.issuperset(name)
                    or self._trailer_bytes > self.max_trailer
                ):
                    raise self._fail("invalid trailer field")
        if self._state == self._DONE:
            return pieces, data[pos:]
        return pieces, None


_EXTCHARS = _TCHAR | frozenset(b' \t=";\\/:?@[]{}(),<>')


def _valid_chunk_ext(ext: bytes) -> bool:
    # chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ): we only insist on visible ASCII
    # without CTLs; extensions are never forwarded (the body is re-framed).
    return _EXTCHARS.issuperset(ext)


def encode_chunk(piece: bytes) -> list[bytes]:
    """Canonical chunked framing of one non-empty payload piece."""
    return [b"%x\r\n" % len(piece), piece, CRLF]


LAST_CHUNK = b"0\r\n\r\n"
