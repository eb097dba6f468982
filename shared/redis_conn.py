"""The one place Redis clients are built (plain URL, Sentinel or Cluster).

Retry budget: a command that fails on a connection error is retried 3 times with
exponential back-off from 50 ms capped at 500 ms, about 1 s in all. That rides over a
Sentinel failover's brief gap or a dropped idle connection, yet stays far below a client's
patience: the control plane then answers 503 rather than hang, and the proxy's sync loop
(which has its own reconnect loop, capped at 2 s as the spec asks) notices quickly.
"""

from __future__ import annotations

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from shared.config import RedisSettings

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)


def make_client(settings: RedisSettings, *, socket_timeout: float | None = COMMAND_TIMEOUT):
    """A redis-py client for ``settings``. ``socket_timeout`` must exceed any XREAD BLOCK used."""
    common = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": socket_timeout,
        "retry": _retry(),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 15,
    }
    if settings.sentinels:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            list(settings.sentinels),
            socket_timeout=CONNECT_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
        )
        return sentinel.master_for(settings.sentinel_master, **common)
    if settings.cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(
            settings.url,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=socket_timeout,
        )
    return Redis.from_url(settings.url, **common)


REDIS_ERRORS: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
