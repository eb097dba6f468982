"""shared.config: env helpers and RedisSettings, each failure naming its variable."""

from __future__ import annotations

import ipaddress

import pytest

from shared.config import (
    ConfigError,
    RedisSettings,
    env_bool,
    env_cidrs,
    env_float,
    env_hostport,
    env_int,
    env_str,
    parse_hostport,
)


def _raises(variable, fn, *args, **kwargs):
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    assert info.value.variable == variable
    assert str(info.value).startswith(variable + ":")


def test_env_str():
    assert env_str({}, "X") is None
    assert env_str({"X": "  "}, "X", "d") == "d"
    assert env_str({"X": " v "}, "X") == "v"


def test_env_int():
    assert env_int({}, "N", 7) == 7
    assert env_int({"N": "12"}, "N", 7) == 12
    _raises("N", env_int, {"N": "x"}, "N", 7)
    _raises("N", env_int, {"N": "-1"}, "N", 7)
    _raises("N", env_int, {"N": "11"}, "N", 7, maximum=10)


def test_env_float():
    assert env_float({"F": "0.5"}, "F", 1.0) == 0.5
    _raises("F", env_float, {"F": "nan"}, "F", 1.0)
    _raises("F", env_float, {"F": "abc"}, "F", 1.0)
    _raises("F", env_float, {"F": "-2"}, "F", 1.0)


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("YES", True), ("off", False), ("0", False)])
def test_env_bool(raw, value):
    assert env_bool({"B": raw}, "B", not value) is value


def test_env_bool_rejects():
    _raises("B", env_bool, {"B": "maybe"}, "B", False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0.0.0.0:8080", ("0.0.0.0", 8080)), ("[::1]:9090", ("::1", 9090)), ("h:0", ("h", 0))],
)
def test_parse_hostport(raw, expected):
    assert parse_hostport("L", raw) == expected


@pytest.mark.parametrize("raw", ["8080", "host:", ":80", "host:99999", "host:x"])
def test_parse_hostport_rejects(raw):
    _raises("L", parse_hostport, "L", raw)


def test_env_hostport_default():
    assert env_hostport({}, "L", "127.0.0.1:9090") == ("127.0.0.1", 9090)


def test_env_cidrs():
    assert env_cidrs({"C": "10.0.0.0/8, ::1/128"}, "C", ()) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert env_cidrs({}, "C", ("127.0.0.0/8",)) == (ipaddress.ip_network("127.0.0.0/8"),)
    _raises("C", env_cidrs, {"C": "10.0.0.0/8,nope"}, "C", ())


def test_redis_settings_defaults():
    s = RedisSettings.from_env({})
    assert s == RedisSettings("redis://127.0.0.1:6379/0", (), None, False, "linx:")


def test_redis_settings_full():
    s = RedisSettings.from_env(
        {
            "REDIS_URL": "rediss://r.example:6380/1",
            "LINX_REDIS_SENTINELS": "s1:26379, s2:26380",
            "LINX_REDIS_SENTINEL_MASTER": "mymaster",
            "LINX_KEY_PREFIX": "{linx}:",
            "LINX_REDIS_CLUSTER": "0",
        }
    )
    assert s.url == "rediss://r.example:6380/1"
    assert s.sentinels == (("s1", 26379), ("s2", 26380))
    assert s.sentinel_master == "mymaster"
    assert s.key_prefix == "{linx}:"


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h", "unix:///tmp/r.sock"])
def test_redis_url_schemes(url):
    assert RedisSettings.from_env({"REDIS_URL": url}).url == url


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDIS_URL": "http://h"}, "REDIS_URL"),
        ({"LINX_REDIS_SENTINELS": "s1:26379"}, "LINX_REDIS_SENTINEL_MASTER"),
        ({"LINX_REDIS_SENTINELS": "s1", "LINX_REDIS_SENTINEL_MASTER": "m"}, "LINX_REDIS_SENTINELS"),
        ({"LINX_KEY_PREFIX": ""}, "LINX_KEY_PREFIX"),
        ({"LINX_KEY_PREFIX": "a b"}, "LINX_KEY_PREFIX"),
        ({"LINX_REDIS_CLUSTER": "sure"}, "LINX_REDIS_CLUSTER"),
        # Cluster mode needs a hash tag so every key lands in one slot (MULTI across keys)
        ({"LINX_REDIS_CLUSTER": "1"}, "LINX_KEY_PREFIX"),
        ({"LINX_REDIS_CLUSTER": "1", "LINX_KEY_PREFIX": "linx:"}, "LINX_KEY_PREFIX"),
        ({"LINX_REDIS_CLUSTER": "1", "LINX_KEY_PREFIX": "{}:"}, "LINX_KEY_PREFIX"),
        ({"LINX_REDIS_CLUSTER": "1", "LINX_KEY_PREFIX": "}linx{:"}, "LINX_KEY_PREFIX"),
    ],
)
def test_redis_settings_errors_name_the_variable(env, variable):
    _raises(variable, RedisSettings.from_env, env)


@pytest.mark.parametrize("prefix", ["{linx}:", "app:{t1}:", "{a}"])
def test_cluster_accepts_hash_tags(prefix):
    s = RedisSettings.from_env({"LINX_REDIS_CLUSTER": "yes", "LINX_KEY_PREFIX": prefix})
    assert s.cluster and s.key_prefix == prefix
