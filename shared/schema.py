"""The Redis key schema, stored format and change feed: the only module that knows them.

Layout (``P`` is the configured key prefix, e.g. ``linx:``)::

    P epoch                      string   random id of this dataset; a new one means Redis lost it
    P tenants                    set      tenant ids
    P tenant:<id>                string   JSON tenant (with API key digests)
    P apikey:<sha256>            string   "<tenant_id> <key_id>"
    P containers                 set      container ids
    P tenant:<id>:containers     set      the tenant's container ids
    P container:<id>             string   JSON container
    P container:<id>:services    hash     service name -> service id (names unique per container)
    P services                   set      service ids
    P service:<id>               string   JSON service (with its signing secrets)
    P expiry                     zset     service id scored by expires_at
    P status:<id>                string   JSON readiness written by proxies
    P linkused:<service id>      hash     share link id -> last use (Unix seconds)
    P feed                       stream   change events, trimmed to about ``feed_maxlen``

Every mutation goes through one MULTI/EXEC that writes the records *and* appends exactly one
change event, so a reader never sees a record without its event or the reverse. Events carry
the whole new record (or only the id for a delete), so applying one twice, or applying events
older than a snapshot, converges to the same state: readers rely on that when they resync.

Readers follow the feed from a position (a stream id). ``FeedGap`` tells them to take a full
snapshot again: the feed was trimmed past their position, or the dataset's epoch changed
(Redis came back empty, or was restored from an older backup).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from sys import intern
from typing import Any

import orjson

try:
    from hiredis import pack_command as _pack_command
except ImportError:  # redis-py works without hiredis (a dependency of ours), with its own packer
    _pack_command = None

from shared.records import ApiKey, Container, Service, ShareLink, Tenant
from shared.tokens import SigningKey

SCHEMA_VERSION = 1
DEFAULT_FEED_MAXLEN = 100_000
START = "0-0"

KIND_TENANT = "tenant"
KIND_CONTAINER = "container"
KIND_SERVICE = "service"
OP_PUT = "put"
OP_DELETE = "delete"


class SchemaError(ValueError):
    """A stored value is not in a format this version understands."""


class FeedGap(Exception):
    """The reader's position can no longer be followed; it must take a new snapshot."""


# --------------------------------------------------------------------------------- keys
# A proxy writes its heartbeat every HEARTBEAT_SECS; a stopped one is out of the list once
# HEARTBEAT_TTL_SECS have passed without one (SPEC section 7: within 30 s).
HEARTBEAT_SECS = 5
HEARTBEAT_TTL_SECS = 15
# What GET /api/admin/proxies shows of each is the control plane's model (control.models.Proxy).


class Keys:
    """Key names under one prefix. The prefix is part of every key, stream included."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.epoch = prefix + "epoch"
        self.tenants = prefix + "tenants"
        self.containers = prefix + "containers"
        self.services = prefix + "services"
        self.expiry = prefix + "expiry"
        self.feed = prefix + "feed"
        self.proxies = prefix + "proxies"

    def tenant(self, tenant_id: str) -> str:
        return f"{self.prefix}tenant:{tenant_id}"

    def tenant_containers(self, tenant_id: str) -> str:
        return f"{self.prefix}tenant:{tenant_id}:containers"

    def api_key(self, digest: str) -> str:
        return f"{self.prefix}apikey:{digest}"

    def container(self, container_id: str) -> str:
        return f"{self.prefix}container:{container_id}"

    def container_services(self, container_id: str) -> str:
        return f"{self.prefix}container:{container_id}:services"

    def service(self, service_id: str) -> str:
        return f"{self.prefix}service:{service_id}"

    def status(self, service_id: str) -> str:
        return f"{self.prefix}status:{service_id}"

    def link_used(self, service_id: str) -> str:
        return f"{self.prefix}linkused:{service_id}"

    def proxy(self, proxy_id: str) -> str:
        return f"{self.prefix}proxy:{proxy_id}"

    def console_session(self, digest: str) -> str:
        return f"{self.prefix}console:{digest}"


# ------------------------------------------------------------------------ encode/decode
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _loads(raw: str | bytes, kind: str) -> dict[str, Any]:
    # orjson, not json: a proxy starting on 100,000 services decodes them all before it may
    # serve, and orjson does it in a third of the time (measured: 2.1 vs 5-7 µs a service).
    try:
        obj = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{kind}: not JSON: {exc}")
    if not isinstance(obj, dict) or obj.get("v") != SCHEMA_VERSION:
        version = obj.get("v") if isinstance(obj, dict) else None
        raise SchemaError(f"{kind}: unsupported schema version {version!r}")
    return obj


def encode_tenant(t: Tenant) -> str:
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "tenant_id": t.tenant_id,
            "name": t.name,
            "created_at": t.created_at,
            "keys": [{"key_id": k.key_id, "digest": k.digest, "created_at": k.created_at} for k in t.keys],
        }
    )


def decode_tenant(raw: str | bytes) -> Tenant:
    o = _loads(raw, KIND_TENANT)
    try:
        return Tenant(
            o["tenant_id"],
            o["name"],
            o["created_at"],
            tuple(ApiKey(k["key_id"], k["digest"], k["created_at"]) for k in o["keys"]),
        )
    except (KeyError, TypeError) as exc:
        raise SchemaError(f"tenant: missing field {exc}")


def encode_container(c: Container) -> str:
    return _dumps({"v": SCHEMA_VERSION, **c.public()})


def decode_container(raw: str | bytes) -> Container:
    o = _loads(raw, KIND_CONTAINER)
    try:
        return Container(
            o["container_id"],
            o["tenant_id"],
            o["name"],
            o["address"],
            o["networking_enabled"],
            o["state"],
            o["exec_ready"],
            o["network_ready"],
            o["created_at"],
            o["updated_at"],
        )
    except KeyError as exc:
        raise SchemaError(f"container: missing field {exc}")


def _encode_key(k: SigningKey) -> dict[str, Any]:
    return {"kid": k.kid, "secret": _b64(k.secret), "expires_at": k.expires_at}


def _decode_key(o: dict[str, Any]) -> SigningKey:
    return SigningKey(o["kid"], _unb64(o["secret"]), o["expires_at"])


def encode_service(s: Service) -> str:
    return _dumps(
        {
            "v": SCHEMA_VERSION,
            "service_id": s.service_id,
            "tenant_id": s.tenant_id,
            "container_id": s.container_id,
            "name": s.name,
            "target_port": s.target_port,
            "protocol": s.protocol,
            "enable_websockets": s.enable_websockets,
            "auth_mode": s.auth_mode,
            "routing": s.routing,
            "cors_preflight": s.cors_preflight,
            "strip_prefix": s.strip_prefix,
            "created_at": s.created_at,
            "updated_at": s.updated_at,
            "expires_at": s.expires_at,
            "token_key": _encode_key(s.token_key),
            "share_links": [
                {
                    "link_id": ln.link_id,
                    "label": ln.label,
                    "key": _encode_key(ln.key),
                    "created_at": ln.created_at,
                }
                for ln in s.share_links
            ],
        }
    )


def decode_service(raw: str | bytes) -> Service:
    o = _loads(raw, KIND_SERVICE)
    try:
        # Positional, in the record's field order (a test checks it): keyword arguments cost
        # about a microsecond more per service, and a proxy starts on 100,000 of them.
        return Service(
            o["service_id"],
            intern(o["tenant_id"]),
            intern(o["container_id"]),
            o["name"],
            o["target_port"],
            intern(o["protocol"]),
            o["enable_websockets"],
            intern(o["auth_mode"]),
            o["created_at"],
            o["updated_at"],
            o["expires_at"],
            _decode_key(o["token_key"]),
            intern(o["routing"]),
            intern(o["cors_preflight"]),
            o.get("strip_prefix", True),  # records written before the field
            tuple(
                ShareLink(ln["link_id"], ln["label"], _decode_key(ln["key"]), ln["created_at"])
                for ln in o["share_links"]
            )
            or (),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SchemaError(f"service: bad or missing field {exc}")


_DECODERS = {
    KIND_TENANT: (decode_tenant, encode_tenant),
    KIND_CONTAINER: (decode_container, encode_container),
    KIND_SERVICE: (decode_service, encode_service),
}


# ------------------------------------------------------------------------------ events
@dataclass(frozen=True)
class Event:
    """One change. ``record`` is the whole new record for a put, None for a delete.

    A container delete also deletes that container's services (the cascade is one mutation,
    one event); a reader drops them when it applies it.
    """

    position: str
    kind: str
    op: str
    id: str
    record: Tenant | Container | Service | None


def encode_event(kind: str, op: str, ident: str, record: Any = None) -> dict[str, str]:
    if kind not in _DECODERS or op not in (OP_PUT, OP_DELETE):
        raise SchemaError(f"unknown event {kind}.{op}")
    fields = {"v": str(SCHEMA_VERSION), "kind": kind, "op": op, "id": ident}
    if op == OP_PUT:
        fields["data"] = _DECODERS[kind][1](record)
    return fields


def decode_event(position: str | bytes, fields: dict) -> Event:
    pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2], strict=True)
    f = {_text(k): _text(v) for k, v in pairs}
    if f.get("v") != str(SCHEMA_VERSION):
        raise SchemaError(f"event {position!r}: unsupported schema version {f.get('v')!r}")
    kind, op = f.get("kind"), f.get("op")
    if kind not in _DECODERS or op not in (OP_PUT, OP_DELETE) or "id" not in f:
        raise SchemaError(f"event {position!r}: unknown event {kind}.{op}")
    record = _DECODERS[kind][0](f["data"]) if op == OP_PUT else None
    return Event(_text(position), kind, op, f["id"], record)


def _text(v: str | bytes) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else v


def compare_positions(a: str, b: str) -> int:
    """Order two stream ids: -1, 0 or 1."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    ka, kb = (int(ams), int(aseq or 0)), (int(bms), int(bseq or 0))
    return (ka > kb) - (ka < kb)


@dataclass(frozen=True)
class FeedCursor:
    """Where a reader is in the feed: the dataset's epoch, the last stream id it has seen,
    and how many entries the feed had ever received up to that id (its offset)."""

    epoch: str
    position: str
    offset: int


@dataclass(frozen=True)
class Snapshot:
    cursor: FeedCursor
    containers: dict[str, Container]
    services: dict[str, Any]  # Service records, or what ``snapshot``'s convert made of them


@dataclass(frozen=True, slots=True)
class Readiness:
    status: str  # "ready" or "target_unreachable"
    target: str  # "address:port" it was measured against
    checked_at: int


# ------------------------------------------------------------------------------ schema
# KEYS: (service key, status key) per service. ARGV: refresh seconds, the number of distinct
# results, each as (stored form, status, target, checked_at), then each service's result number.
_READINESS_LUA = """
local refresh, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local written = 0
for i = 1, #KEYS / 2 do
  local base = 2 + 4 * (tonumber(ARGV[2 + 4 * n + i]) - 1)
  local status, target, checked = ARGV[base + 2], ARGV[base + 3], tonumber(ARGV[base + 4])
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 1 then
    local fresh = false
    local current = redis.call('GET', KEYS[2 * i])
    if current then
      local ok, old = pcall(cjson.decode, current)
      if ok and type(old) == 'table' then
        local at = tonumber(old.checked_at)
        fresh = old.status == status and old.target == target and at ~= nil and checked - at < refresh
      end
    end
    if not fresh then
      redis.call('SET', KEYS[2 * i], ARGV[base + 1])
      written = written + 1
    end
  end
end
return written
"""
READINESS_BATCH = 500  # services per script call: a few milliseconds of Redis time at most


def readiness_batches(
    results: Iterable[tuple[Readiness, Sequence[str]]], size: int = READINESS_BATCH
) -> Iterator[list[tuple[Readiness, Sequence[str]]]]:
    """``results`` regrouped into batches of at most ``size`` services: one script call each."""
    batch: list[tuple[Readiness, Sequence[str]]] = []
    room = size
    for readiness, service_ids in results:
        start = 0
        while start < len(service_ids):
            part = service_ids[start : start + room]
            start += len(part)
            batch.append((readiness, part))
            room -= len(part)
            if room == 0:
                yield batch
                batch, room = [], size
    if batch:
        yield batch


def _encode_readiness(r: Readiness) -> str:
    return _dumps({"v": SCHEMA_VERSION, "status": r.status, "target": r.target, "checked_at": r.checked_at})


class Schema:
    """Reads and writes in Linx's key schema. Writers take a pipeline in MULTI mode.

    Thread-safety: stateless apart from the key names; safe from any thread.
    """

    def __init__(self, prefix: str, feed_maxlen: int = DEFAULT_FEED_MAXLEN) -> None:
        self.keys = Keys(prefix)
        self.feed_maxlen = feed_maxlen

    # -- epoch
    def ensure_epoch(self, client) -> str:
        """The dataset's epoch, creating one if Redis has none (first start, or came back empty)."""
        client.set(self.keys.epoch, secrets.token_hex(8), nx=True)
        return _text(client.get(self.keys.epoch))

    # -- plain reads
    def get_tenant(self, client, tenant_id: str) -> Tenant | None:
        raw = client.get(self.keys.tenant(tenant_id))
        return decode_tenant(raw) if raw is not None else None

    def tenant_key_owner(self, client, digest: str) -> tuple[str, str] | None:
        raw = client.get(self.keys.api_key(digest))
        if raw is None:
            return None
        tenant_id, _, key_id = _text(raw).partition(" ")
        return tenant_id, key_id

    def list_tenants(self, client) -> list[Tenant]:
        return self._many(client, self.keys.tenants, self.keys.tenant, decode_tenant)

    def get_container(self, client, container_id: str) -> Container | None:
        raw = client.get(self.keys.container(container_id))
        return decode_container(raw) if raw is not None else None

    def list_containers(self, client) -> list[Container]:
        """Every container (operator listing)."""
        return self._many(client, self.keys.containers, self.keys.container, decode_container)

    def list_tenant_containers(self, client, tenant_id: str) -> list[Container]:
        return self._many(
            client, self.keys.tenant_containers(tenant_id), self.keys.container, decode_container
        )

    def get_service(self, client, service_id: str) -> Service | None:
        raw = client.get(self.keys.service(service_id))
        return decode_service(raw) if raw is not None else None

    def service_id_by_name(self, client, container_id: str, name: str) -> str | None:
        raw = client.hget(self.keys.container_services(container_id), name)
        return _text(raw) if raw is not None else None

    def list_container_services(self, client, container_id: str) -> list[Service]:
        ids = sorted(_text(v) for v in client.hvals(self.keys.container_services(container_id)))
        return self._get_many(client, ids, self.keys.service, decode_service)

    def expired_before(self, client, cutoff: float, limit: int = 100) -> list[str]:
        return [_text(v) for v in client.zrangebyscore(self.keys.expiry, "-inf", cutoff, 0, limit)]

    def _many(self, client, set_key: str, key_of, decode) -> list:
        ids = sorted(_text(v) for v in client.smembers(set_key))
        return self._get_many(client, ids, key_of, decode)

    @staticmethod
    def _get_many(client, ids: list[str], key_of, decode) -> list:
        out = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            if not chunk:
                continue
            for raw in client.mget([key_of(x) for x in chunk]):
                if raw is not None:
                    out.append(decode(raw))
        return out

    # -- writers (pipe is a redis pipeline after .multi())
    def _emit(self, pipe, kind: str, op: str, ident: str, record: Any = None) -> None:
        pipe.set(self.keys.epoch, secrets.token_hex(8), nx=True)
        pipe.xadd(
            self.keys.feed,
            encode_event(kind, op, ident, record),
            maxlen=self.feed_maxlen,
            approximate=True,
        )

    def put_tenant(self, pipe, tenant: Tenant, previous: Tenant | None = None) -> None:
        pipe.set(self.keys.tenant(tenant.tenant_id), encode_tenant(tenant))
        pipe.sadd(self.keys.tenants, tenant.tenant_id)
        new_digests = {k.digest for k in tenant.keys}
        for old in previous.keys if previous else ():
            if old.digest not in new_digests:
                pipe.delete(self.keys.api_key(old.digest))
        for k in tenant.keys:
            pipe.set(self.keys.api_key(k.digest), f"{tenant.tenant_id} {k.key_id}")
        self._emit(pipe, KIND_TENANT, OP_PUT, tenant.tenant_id, tenant)

    def put_container(self, pipe, container: Container) -> None:
        pipe.set(self.keys.container(container.container_id), encode_container(container))
        pipe.sadd(self.keys.containers, container.container_id)
        pipe.sadd(self.keys.tenant_containers(container.tenant_id), container.container_id)
        self._emit(pipe, KIND_CONTAINER, OP_PUT, container.container_id, container)

    def delete_container(self, pipe, container: Container, service_ids: Iterable[str]) -> None:
        """Delete a container and (the cascade) every service of it, as one event."""
        for sid in service_ids:
            self._drop_service_keys(pipe, sid)
        pipe.delete(self.keys.container(container.container_id))
        pipe.delete(self.keys.container_services(container.container_id))
        pipe.srem(self.keys.containers, container.container_id)
        pipe.srem(self.keys.tenant_containers(container.tenant_id), container.container_id)
        self._emit(pipe, KIND_CONTAINER, OP_DELETE, container.container_id)

    def put_service(self, pipe, service: Service) -> None:
        pipe.set(self.keys.service(service.service_id), encode_service(service))
        pipe.sadd(self.keys.services, service.service_id)
        pipe.hset(self.keys.container_services(service.container_id), service.name, service.service_id)
        if service.expires_at is None:
            pipe.zrem(self.keys.expiry, service.service_id)
        else:
            pipe.zadd(self.keys.expiry, {service.service_id: service.expires_at})
        self._emit(pipe, KIND_SERVICE, OP_PUT, service.service_id, service)

    def delete_service(self, pipe, service: Service) -> None:
        self._drop_service_keys(pipe, service.service_id)
        pipe.hdel(self.keys.container_services(service.container_id), service.name)
        self._emit(pipe, KIND_SERVICE, OP_DELETE, service.service_id)

    def forget_expiry(self, pipe, service_id: str) -> None:
        """Drop a stale expiry-index entry whose service record is already gone (no event:
        no record changes)."""
        pipe.zrem(self.keys.expiry, service_id)

    def _drop_service_keys(self, pipe, service_id: str) -> None:
        pipe.delete(self.keys.service(service_id))
        pipe.delete(self.keys.status(service_id))
        pipe.delete(self.keys.link_used(service_id))
        pipe.srem(self.keys.services, service_id)
        pipe.zrem(self.keys.expiry, service_id)

    # -- readiness (written by proxies, outside the feed: it is observation, not config)
    def write_readiness(self, client, service_id: str, readiness: Readiness, refresh_secs: int = 60) -> None:
        """Store readiness while the service exists, and only when it is news.

        The comparison runs in Redis: several proxies probing one target write once per change
        (or once per ``refresh_secs``), not once each per probe. Works on a pipeline too.
        """
        self.write_readiness_many(client, [(readiness, [service_id])], refresh_secs)

    def write_readiness_many(
        self, client, results: Iterable[tuple[Readiness, Sequence[str]]], refresh_secs: int = 60
    ) -> None:
        """``write_readiness`` for many services: ``results`` pairs one result with the services
        it is for (those of one target). One script call per ``READINESS_BATCH`` services,
        whatever their targets; each result's stored form is built once per call."""
        keys = self.keys
        for batch in readiness_batches(results):
            names: list[str] = []
            params: list[Any] = []
            which: list[int] = []
            for number, (readiness, service_ids) in enumerate(batch, 1):
                params += (
                    _encode_readiness(readiness),
                    readiness.status,
                    readiness.target,
                    readiness.checked_at,
                )
                for sid in service_ids:
                    names += (keys.service(sid), keys.status(sid))
                    which.append(number)
            client.eval(_READINESS_LUA, len(names), *names, refresh_secs, len(batch), *params, *which)

    def read_readiness(self, client, service_ids: list[str]) -> dict[str, Readiness]:
        if not service_ids:
            return {}
        out = {}
        for sid, raw in zip(
            service_ids, client.mget([self.keys.status(s) for s in service_ids]), strict=True
        ):
            if raw is None:
                continue
            try:
                o = _loads(raw, "status")
                out[sid] = Readiness(o["status"], o["target"], o["checked_at"])
            except (SchemaError, KeyError):
                continue
        return out

    # -- share link use
    def mark_links_used(self, client, service_id: str, used: dict[str, int]) -> None:
        """Record share-link use (written by proxies), only while the service exists."""
        args = [str(x) for pair in used.items() for x in pair]
        client.eval(
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[2], unpack(ARGV)) end",
            2,
            self.keys.service(service_id),
            self.keys.link_used(service_id),
            *args,
        )

    def links_used(self, client, service_id: str) -> dict[str, int]:
        return {_text(k): int(v) for k, v in client.hgetall(self.keys.link_used(service_id)).items()}

    # -- console sessions (stored under the SHA-256 of their id: a Redis reader gets no cookie)
    def put_console_session(self, client, digest: str, session: dict[str, Any], ttl: int) -> None:
        client.set(self.keys.console_session(digest), _dumps(session), ex=ttl)

    def get_console_session(self, client, digest: str) -> dict[str, Any] | None:
        raw = client.get(self.keys.console_session(digest))
        return json.loads(raw) if raw is not None else None

    def touch_console_session(self, client, digest: str, ttl: int) -> None:
        client.expire(self.keys.console_session(digest), ttl)

    def delete_console_session(self, client, digest: str) -> None:
        client.delete(self.keys.console_session(digest))

    # -- proxy heartbeats
    def put_heartbeat(self, client, beat: dict[str, Any], now: float, ttl: int = HEARTBEAT_TTL_SECS) -> None:
        """A proxy's heartbeat (written by that proxy every ``HEARTBEAT_SECS``): its record
        expires by itself, and the index says which ids to read."""
        proxy_id = beat["proxy_id"]
        client.set(self.keys.proxy(proxy_id), _dumps(beat), ex=ttl)
        client.zadd(self.keys.proxies, {proxy_id: now})

    def drop_heartbeat(self, client, proxy_id: str) -> None:
        """A proxy stopping: out of the list at once (its record expires on its own)."""
        client.zrem(self.keys.proxies, proxy_id)

    def list_heartbeats(self, client, now: float, ttl: int = HEARTBEAT_TTL_SECS) -> list[dict[str, Any]]:
        """The live proxies' heartbeats, by proxy id; stale index entries are pruned."""
        client.zremrangebyscore(self.keys.proxies, "-inf", now - ttl)
        ids = sorted(_text(v) for v in client.zrangebyscore(self.keys.proxies, now - ttl, "+inf"))
        if not ids:
            return []
        raw = client.mget([self.keys.proxy(i) for i in ids])
        return [json.loads(v) for v in raw if v is not None]

    # -- feed: readers
    def snapshot(
        self, client, convert: Callable[[Service, dict[str, Container]], Any] | None = None
    ) -> Snapshot:
        """Every container and service, plus a cursor they are at least as new as.

        The cursor is read *before* the records, so replaying events after it can only
        repeat changes the snapshot already holds (harmless: events carry whole records),
        never skip one. ``convert(service, containers)``, when given, replaces each service
        as it is read (the proxy keeps a compact view, not 100,000 whole records at once).
        """
        epoch = self.ensure_epoch(client)
        pipe = client.pipeline(transaction=True)
        pipe.execute_command("XINFO", "STREAM", self.keys.feed)
        pipe.get(self.keys.epoch)
        info, current = pipe.execute(raise_on_error=False)
        if current is not None:
            epoch = _text(current)
        if isinstance(info, Exception):
            cursor = FeedCursor(epoch, START, 0)
        else:
            cursor = FeedCursor(
                epoch,
                _text(_xinfo_field(info, "last-generated-id")),
                int(_xinfo_field(info, "entries-added")),
            )
        containers = {
            c.container_id: c
            for c in self._many(client, self.keys.containers, self.keys.container, decode_container)
        }
        if convert is None:
            decode = decode_service
        else:

            def decode(raw: str | bytes) -> Any:
                return convert(decode_service(raw), containers)

        services = {
            s.service_id: s for s in self._many(client, self.keys.services, self.keys.service, decode)
        }
        return Snapshot(cursor, containers, services)

    def read_feed(self, client, cursor: FeedCursor, count: int = 1000) -> tuple[list[Event], FeedCursor]:
        """Events after ``cursor`` (at most ``count``) and the cursor after them; never blocks.

        Raises FeedGap when they cannot be trusted to be complete. Gap detection is exact:
        trimming removes the oldest entries first, so ``entries-added - length`` entries are
        gone, and they are all ones this reader has seen iff that number is at most the
        cursor's offset (how many entries it has seen). The check and the read run in one
        MULTI so that no trim can fall between them.

        The usual read needs no XINFO: while the cursor's own entry is in the stream, nothing
        after it can have been trimmed (trimming takes the oldest first, and no user may XDEL),
        so a MULTI of the epoch and an XRANGE starting at that entry proves the rest complete.
        Only when it is gone (a reader far behind, or the empty feed's ``0-0``) does the exact
        check run. (About a tenth less CPU per read than the MULTI with XINFO, measured
        alternately on one Redis.)
        """
        if cursor.position != START:
            pipe = client.pipeline(transaction=True)
            pipe.get(self.keys.epoch)
            pipe.xrange(self.keys.feed, min=cursor.position, max="+", count=count + 1)
            current_epoch, entries = pipe.execute()
            if current_epoch is None or _text(current_epoch) != cursor.epoch:
                raise FeedGap("the dataset's epoch changed: Redis lost or replaced its data")
            if entries and _text(entries[0][0]) == cursor.position:
                events = [decode_event(pos, fields) for pos, fields in entries[1:]]
                if not events:
                    return [], cursor
                return events, FeedCursor(cursor.epoch, events[-1].position, cursor.offset + len(events))
        pipe = client.pipeline(transaction=True)
        pipe.get(self.keys.epoch)
        pipe.execute_command("XINFO", "STREAM", self.keys.feed)
        pipe.xrange(self.keys.feed, min="(" + cursor.position, max="+", count=count)
        current_epoch, info, entries = pipe.execute(raise_on_error=False)
        if isinstance(current_epoch, Exception):
            raise current_epoch
        if current_epoch is None or _text(current_epoch) != cursor.epoch:
            raise FeedGap("the dataset's epoch changed: Redis lost or replaced its data")
        if isinstance(info, Exception):
            if cursor.offset:
                raise FeedGap("the change feed is gone")
            return [], cursor
        if isinstance(entries, Exception):
            raise entries
        trimmed = int(_xinfo_field(info, "entries-added")) - int(_xinfo_field(info, "length"))
        if trimmed > cursor.offset:
            raise FeedGap(f"the change feed was trimmed past this reader ({trimmed} > {cursor.offset})")
        events = [decode_event(pos, fields) for pos, fields in entries]
        if not events:
            return [], cursor
        return events, FeedCursor(cursor.epoch, events[-1].position, cursor.offset + len(events))

    def follow_feed(
        self, client, cursor: FeedCursor, count: int = 1000, block_ms: int = 1000, conn=None
    ) -> tuple[list[Event], FeedCursor]:
        """``read_feed``, waiting up to ``block_ms`` for events when there are none yet, in one
        round trip where ``wait_feed`` and ``read_feed`` take two (measured on the sync
        thread when it came: 118-131 µs of CPU a call, against 250 µs for the two; 151-182 µs
        through a redis-py pipeline).

        One pipeline, run in order on one connection: XREAD BLOCK from the cursor, then the
        epoch and the cursor's own entry. Checked after the read, they prove it as the MULTI
        of ``read_feed`` does: an entry after the cursor trimmed before the read would have
        taken the older cursor entry with it, and that entry does not come back; a dataset
        replaced before or during the read shows a new epoch. When the cursor's entry is gone
        (or is the empty feed's ``0-0``), ``read_feed`` decides with its exact check.

        ``conn``: a connection held by the caller for its feed reads alone
        (``feed_connection``), which skips the pool's checkout and health check per call: at
        one event a call, 1,000 a second, 78 µs of CPU a call against 95 µs through the pool
        (and 108 µs with redis-py's packer; thread CPU time, one run of each).
        """
        if cursor.position == START:
            self.wait_feed(client, cursor, block_ms)
            return self.read_feed(client, cursor, count)
        feed, position = self.keys.feed, cursor.position
        read, current_epoch, own = _in_order(
            client,
            ("XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", feed, position),
            ("GET", self.keys.epoch),
            ("XRANGE", feed, position, position, "COUNT", 1),
            conn=conn,
        )
        if current_epoch is None or _text(current_epoch) != cursor.epoch:
            raise FeedGap("the dataset's epoch changed: Redis lost or replaced its data")
        if not own:
            return self.read_feed(client, cursor, count)
        events = [decode_event(pos, fields) for pos, fields in _xread_entries(read)]
        if not events:
            return [], cursor
        return events, FeedCursor(cursor.epoch, events[-1].position, cursor.offset + len(events))

    @staticmethod
    def feed_connection(client):
        """A connection to ``client``'s server for ``follow_feed`` alone, outside its pool
        (None for a Cluster client, whose pipelines pick theirs). It connects at its first
        use and again after an error; the caller disconnects it when done."""
        pool = getattr(client, "connection_pool", None)
        return pool.make_connection() if pool is not None else None

    def wait_feed(self, client, cursor: FeedCursor, block_ms: int) -> bool:
        """Block up to ``block_ms`` until the feed has something after ``cursor``.

        Only a wake-up signal: the events themselves are taken by ``read_feed``.
        """
        read = client.xread({self.keys.feed: cursor.position}, count=1, block=block_ms)
        return bool(read)


def _in_order(client, *commands: tuple, conn=None) -> list:
    """The replies to ``commands``, sent in one write on one connection (``conn``, else one
    from ``client``'s pool) and run in order: a pipeline without redis-py's per-call
    machinery, which costs more CPU than the round trip itself (figures in ``follow_feed``).
    Replies come raw (no response callbacks). A Cluster client takes its own pipeline, which
    follows slot moves (the commands share one slot: the prefix's tag)."""
    if conn is not None:
        return _exchange(conn, commands)
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute()
    conn = pool.get_connection()
    try:
        return _exchange(conn, commands)
    finally:
        pool.release(conn)


def _exchange(conn, commands: tuple) -> list:
    # Connected first, and by connect() (nothing when connected already): a connection's own
    # send would reconnect by itself, but past a Sentinel's choice of master (redis-py 8
    # dials the connection's configured address).
    conn.connect()
    try:
        # hiredis packs in C what redis-py's packer builds per argument in Python (3 commands:
        # 1.7 µs against 13 µs, the same bytes)
        data = [b"".join(map(_pack_command, commands))] if _pack_command else conn.pack_commands(commands)
        conn.send_packed_command(data)
        return [conn.read_response() for _ in commands]
    except BaseException:
        conn.disconnect()  # replies may be left unread: this connection is done
        raise


def _xread_entries(read: Any) -> list:
    """The entries of a one-stream XREAD reply: None (timed out), RESP2's
    ``[[stream, entries]]`` or RESP3's ``{stream: entries}``; redis-py's RESP3 callback wraps
    the entries in one more list (a Cluster pipeline applies it)."""
    if not read:
        return []
    entries = next(iter(read.values())) if isinstance(read, dict) else read[0][1]
    if entries and isinstance(entries[0], list) and entries[0] and isinstance(entries[0][0], list | tuple):
        entries = entries[0]
    return entries


def _xinfo_field(info: Any, name: str) -> Any:
    if isinstance(info, dict):
        for k, v in info.items():
            if _text(k) == name:
                return v
        return None
    if isinstance(info, list):
        for i in range(0, len(info) - 1, 2):
            if _text(info[i]) == name:
                return info[i + 1]
    return None
