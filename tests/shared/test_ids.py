"""Identifier shapes: prefix + 26 lower-case base32 characters (130 bits), DNS-label safe."""

from __future__ import annotations

import re

import pytest

from shared import ids

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize("prefix", [ids.TENANT, ids.CONTAINER, ids.SERVICE, ids.API_KEY_ID, ids.SHARE_LINK])
def test_new_id_shape(prefix):
    made = {ids.new_id(prefix) for _ in range(200)}
    assert len(made) == 200
    for value in made:
        assert value.startswith(prefix)
        body = value[len(prefix) :]
        assert re.fullmatch(r"[a-z2-7]{26}", body)  # 26 * 5 = 130 bits
        assert ids.looks_like(prefix, value)


def test_prefixes_are_the_specs():
    assert (ids.TENANT, ids.CONTAINER, ids.SERVICE) == ("ten_", "ctr_", "lnx_")


@pytest.mark.parametrize(
    "value",
    [
        "lnx_",
        "lnx_ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "lnx_abc",
        "ctr_abcdefghijklmnopqrstuvwxyz",
        "lnx_abcdefghijklmnopqrstuvwxyz0",
        "lnx_abcdefghijklmnopqrstuvwxy1",
    ],
)
def test_looks_like_rejects(value):
    assert not ids.looks_like(ids.SERVICE, value)


def test_service_label_is_a_dns_label_and_round_trips():
    for _ in range(100):
        sid = ids.new_id(ids.SERVICE)
        label = ids.service_label(sid)
        assert label.startswith("lnx-")
        assert DNS_LABEL.match(label)
        assert ids.service_id_from_label(label) == sid
        assert ids.service_id_from_label(label.upper()) == sid


@pytest.mark.parametrize("label", ["www", "lnx-short", "ctr-abcdefghijklmnopqrstuvwxyz", ""])
def test_service_id_from_label_rejects(label):
    assert ids.service_id_from_label(label) is None


def test_secrets_and_keys():
    assert len(ids.new_secret()) == 32
    assert ids.new_secret() != ids.new_secret()
    key = ids.new_api_key()
    assert key.startswith("lxk_") and re.fullmatch(r"lxk_[a-z2-7]{32}", key)
    kid = ids.new_key_id()
    assert re.fullmatch(r"[a-z2-7]{16}", kid)
