"""Fixtures shared by every layer: a real Redis server on a free port, a fresh key prefix per test."""

from __future__ import annotations

import secrets

import pytest
import redis

from deploy.redis_process import RedisProcess
from shared.config import RedisSettings
from shared.schema import Schema


@pytest.fixture(scope="session")
def redis_server():
    server = RedisProcess().start()
    yield server
    server.stop()


@pytest.fixture
def key_prefix() -> str:
    """Each test gets its own prefix instead of flushing Redis (tests may share one server)."""
    return f"t{secrets.token_hex(4)}:"


@pytest.fixture
def redis_settings(redis_server, key_prefix) -> RedisSettings:
    return RedisSettings(url=redis_server.url, key_prefix=key_prefix)


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def schema(key_prefix) -> Schema:
    return Schema(key_prefix)
