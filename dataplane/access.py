"""Who may pass: the spec's access table (section 5) as one pure function, and token carriers.

No I/O, no clock of its own: ``now`` and the sync's freshness are arguments, so every row of
the table is tested with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from dataplane.routes import Route
from shared import tokens

TOKEN_PARAM = b"linx_token"
TOKEN_HEADER = b"x-linx-token"
SUBPROTOCOL_PREFIX = b"linx.token."
_TOKEN_CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Denial:
    status: int
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Grant:
    kid: str | None  # the key the request was authenticated with (None: public or preflight)
    source: str | None  # "query", "header", "cookie", "subprotocol"
    token: str | None


Decision = Denial | Grant

NOT_FOUND = Denial(404, "service_not_found", "no such service")
TOKEN_REQUIRED = Denial(401, "token_required", "this service needs an access token")
TOKEN_INVALID = Denial(
    403,
    "token_invalid",
    "the access token is not valid for this service (it may have been rotated: use the current public_url)",
)
TOKEN_EXPIRED = Denial(403, "token_expired", "the access token has expired")
EXPIRED = Denial(410, "service_expired", "this service has expired")
WS_DISABLED = Denial(403, "websockets_disabled", "WebSockets are not enabled for this service")
ORIGIN_MISMATCH = Denial(
    403, "origin_mismatch", "a request authenticated by cookie alone must come from the same origin"
)
SYNC_STALE = Denial(503, "sync_stale", "the proxy has lost its route sync; try again shortly")
TARGET_UNAVAILABLE = Denial(
    503, "target_unavailable", "the container is not running or not ready for network traffic"
)
TARGET_NOT_ALLOWED = Denial(
    503, "target_not_allowed", "the container's address is outside the allowed networks"
)
PUBLIC_GRANT = Grant(None, None, None)
_GRANTS: dict[tuple[str | None, str | None, str | None], Grant] = {}


@dataclass(frozen=True, slots=True)
class Credentials:
    """The token a request carries and where it came from; ``ambiguous`` when several differ."""

    token: str | None = None
    source: str | None = None
    ambiguous: bool = False


NO_CREDENTIALS = Credentials()


def split_query(query: bytes) -> tuple[list[bytes], bytes]:
    """Split the query into its ``linx_token`` values and the rest, byte-for-byte, in order.

    A parameter counts as ``linx_token`` when its percent-decoded name is exactly that, so
    ``linx%5Ftoken`` cannot smuggle a token to the container.
    """
    if TOKEN_PARAM not in query and b"%" not in query:
        return [], query
    values: list[bytes] = []
    kept: list[bytes] = []
    for item in query.split(b"&"):
        name, _, value = item.partition(b"=")
        if name == TOKEN_PARAM or (b"%" in name and unquote_to_bytes(name) == TOKEN_PARAM):
            values.append(unquote_to_bytes(value) if b"%" in value else value)
        else:
            kept.append(item)
    return values, b"&".join(kept)


def cookie_token(cookie_values: list[bytes], cookie_name: bytes) -> tuple[list[bytes], list[bytes]]:
    """The values of ``cookie_name`` and each Cookie header with every ``linx_`` cookie removed."""
    found: list[bytes] = []
    cleaned: list[bytes] = []
    for header in cookie_values:
        if b"linx_" not in header:
            cleaned.append(header)
            continue
        kept = []
        for part in header.split(b";"):
            name, _, value = part.strip().partition(b"=")
            if name == cookie_name:
                found.append(value.strip(b'"'))
            if name.startswith(b"linx_"):
                continue
            if part.strip():
                kept.append(part.strip())
        if kept:
            cleaned.append(b"; ".join(kept))
    return found, cleaned


def pick_credentials(
    query_tokens: list[bytes],
    header_tokens: list[bytes],
    cookie_tokens: list[bytes],
    subprotocol_tokens: list[bytes],
) -> Credentials:
    """The first carrier present wins (query, header, subprotocol, cookie).

    Several different values in that carrier make the request ambiguous: refused, never
    resolved by picking one, so a forged duplicate cannot ride along a good token.
    """
    for source, values in (
        ("query", query_tokens),
        ("header", header_tokens),
        ("subprotocol", subprotocol_tokens),
        ("cookie", cookie_tokens),
    ):
        if values:
            if len(values) > 1 and len(set(values)) > 1:
                return Credentials(None, source, True)
            # A client sends the same token on every request: one object per (carrier, token)
            memo_key = (source, values[0])
            creds = _CREDENTIALS.get(memo_key)
            if creds is None:
                try:
                    creds = Credentials(values[0].decode("ascii"), source, False)
                except UnicodeDecodeError:
                    return Credentials(None, source, True)
                if len(values[0]) <= tokens.MAX_TOKEN_LENGTH:  # longer: invalid anyway, not kept
                    _keep(_CREDENTIALS, memo_key, creds)
            return creds
    return NO_CREDENTIALS


# Any value a client sends is kept here, valid or not: at most 1,024 of at most 256 bytes.
_CREDENTIALS: dict[tuple[str, bytes], Credentials] = {}


def _keep(memo: dict, key, value):
    """``memo[key] = value``, starting over at ``_TOKEN_CACHE_MAX`` entries; returns ``value``.
    (The three memos of this module: credentials, a route's signature checks, grants.)"""
    if len(memo) >= _TOKEN_CACHE_MAX:
        memo.clear()
    memo[key] = value
    return value


def verify_token(route: Route, token: str, now: float) -> tokens.Verification:
    """``tokens.verify`` with a per-route cache of signature checks.

    Only the signature outcome is cached (a Route is immutable, so its keys cannot change under
    the cache); key expiry is re-checked against ``now`` on every call.
    """
    cache = route.token_cache
    if cache is None:
        cache = route.token_cache = {}
    valid = cache.get(token)  # the VALID verification itself: immutable, made once
    if valid is None:
        result = tokens.verify(token, route.service_id, route, float("-inf"))
        if result.verdict is not tokens.Verdict.VALID:
            return tokens.INVALID
        valid = _keep(cache, token, result)
    key = route.get(valid.kid)
    if key.expires_at is not None and now >= key.expires_at:
        return tokens.Verification(tokens.Verdict.EXPIRED, valid.kid)
    return valid


def decide(
    route: Route | None,
    creds: Credentials,
    now: float,
    *,
    fresh: bool,
    websocket: bool = False,
    preflight: bool = False,
    same_origin: bool = True,
    unsafe_cross_origin: bool = False,
) -> Decision:
    """The access table, in the spec's order of checks. Pure.

    ``same_origin``: a WebSocket upgrade's ``Origin`` names the request's own host.
    ``unsafe_cross_origin``: a state-changing method (not GET/HEAD/OPTIONS) whose ``Origin``
    names another host. Both matter only when the cookie alone authenticates the request: a
    page of one service must not make the browser write to another service with that
    service's cookie (sibling host names are one "site", so SameSite=Lax does not stop it).
    Services with ``cors_preflight: passthrough`` opted into cross-origin use and keep it.
    """
    if route is None:
        return NOT_FOUND
    grant = PUBLIC_GRANT
    if not route.public and not (preflight and route.cors_passthrough):
        if creds.ambiguous:
            return TOKEN_INVALID
        if creds.token is None:
            return TOKEN_REQUIRED
        result = verify_token(route, creds.token, now)
        if result.verdict is tokens.Verdict.INVALID:
            return TOKEN_INVALID
        if result.verdict is tokens.Verdict.EXPIRED:
            return TOKEN_EXPIRED
        memo_key = (result.kid, creds.source, creds.token)
        grant = _GRANTS.get(memo_key)
        if grant is None:  # a Grant is immutable: one per key, carrier and token
            grant = _keep(_GRANTS, memo_key, Grant(result.kid, creds.source, creds.token))
    if route.expired(now):
        return EXPIRED
    if websocket:
        if not route.websockets:
            return WS_DISABLED
        if grant.source == "cookie" and not same_origin:
            return ORIGIN_MISMATCH
    elif unsafe_cross_origin and grant.source == "cookie" and not route.cors_passthrough:
        return ORIGIN_MISMATCH
    if not route.public and not fresh:
        return SYNC_STALE
    if not route.usable:
        return TARGET_UNAVAILABLE
    if not route.allowed:
        return TARGET_NOT_ALLOWED
    return grant


def revocation(granted: Route | None, kid: str | None, route: Route | None, now: float) -> Denial | None:
    """The answer a connection granted under ``granted`` with key ``kid`` now gets, or None
    while it is still allowed. Pure; the same codes as ``decide`` for the same situations.

    A container that moved (same service, new address) is not a denial: the next request
    goes to the new address. Whoever holds a stream to the old one checks ``moved``.
    """
    if route is None or granted is None:
        return NOT_FOUND
    if kid is None:
        if not route.public:  # made token-protected (PATCH), or a preflight's passage
            return TOKEN_REQUIRED
    else:
        key = route.get(kid)
        if key is None:
            return TOKEN_INVALID
        if key.expires_at is not None and now >= key.expires_at:
            return TOKEN_EXPIRED
    if route.expired(now):
        return EXPIRED
    if not route.usable:
        return TARGET_UNAVAILABLE
    if not route.allowed:
        return TARGET_NOT_ALLOWED
    return None


def moved(granted: Route | None, route: Route | None) -> bool:
    """The service's container answers at another address than when ``granted`` was decided."""
    return granted is not None and route is not None and route.target != granted.target
