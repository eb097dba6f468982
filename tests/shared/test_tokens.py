"""Tokens (SPEC section 4), pure: sign/verify with an explicit ``now``."""

from __future__ import annotations

import hashlib
import re

import pytest

from shared.tokens import (
    MAX_TOKEN_LENGTH,
    SigningKey,
    Verdict,
    api_key_digest,
    sign,
    verify,
)

SID = "lnx_aaaaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "lnx_bbbbbbbbbbbbbbbbbbbbbbbbbb"
KEY = SigningKey("kid1", b"\x01" * 32)
ROTATED = SigningKey("kid2", b"\x02" * 32)
LINK = SigningKey("kid3", b"\x03" * 32, expires_at=1000)
NOW = 500


def _flip(token: str, index: int) -> str:
    chars = list(token)
    chars[index] = "A" if chars[index] != "A" else "B"
    return "".join(chars)


GOOD = sign(SID, KEY)


def test_shape():
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", GOOD)
    assert len(GOOD) <= MAX_TOKEN_LENGTH
    assert GOOD.startswith("v1.kid1.")
    assert sign(SID, KEY) == GOOD  # deterministic


@pytest.mark.parametrize(
    ("token", "sid", "keys", "now", "verdict"),
    [
        (GOOD, SID, {"kid1": KEY}, NOW, Verdict.VALID),
        (GOOD, OTHER, {"kid1": KEY}, NOW, Verdict.INVALID),  # another service
        (sign(OTHER, KEY), SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        (GOOD, SID, {"kid2": ROTATED}, NOW, Verdict.INVALID),  # rotated out
        (sign(SID, ROTATED), SID, {"kid2": ROTATED}, NOW, Verdict.VALID),
        # a forged key id with the right secret name but another secret
        (sign(SID, SigningKey("kid1", b"\x09" * 32)), SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        (sign(SID, LINK), SID, {"kid3": LINK}, 999, Verdict.VALID),
        (sign(SID, LINK), SID, {"kid3": LINK}, 1000, Verdict.EXPIRED),
        (sign(SID, LINK), SID, {"kid3": LINK, "kid1": KEY}, 5000, Verdict.EXPIRED),
        ("", SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        ("v1.kid1", SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        ("v2" + GOOD[2:], SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        (GOOD + ".x", SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        (GOOD + "=", SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        (GOOD[:-1], SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        (GOOD + "A", SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        (GOOD.replace(".", " ", 1), SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        ("v1.kid1." + "A" * 300, SID, {"kid1": KEY}, NOW, Verdict.INVALID),
        ("v1.kid1.é", SID, {"kid1": KEY}, NOW, Verdict.INVALID),
    ],
)
def test_verify_table(token, sid, keys, now, verdict):
    assert verify(token, sid, keys, now).verdict is verdict


@pytest.mark.parametrize("index", range(len("v1.kid1."), len(GOOD)))
def test_every_signature_bit_flip_is_refused(index):
    assert verify(_flip(GOOD, index), SID, {"kid1": KEY}, NOW).verdict is Verdict.INVALID


def test_service_key_without_expiry_never_expires():
    assert verify(GOOD, SID, {"kid1": KEY}, 10**12).verdict is Verdict.VALID


def test_verified_key_id_is_reported():
    assert verify(GOOD, SID, {"kid1": KEY}, NOW).kid == "kid1"


def test_signature_compare_is_constant_time(monkeypatch):
    import shared.tokens

    seen = []
    real = shared.tokens.hmac.compare_digest
    monkeypatch.setattr(shared.tokens.hmac, "compare_digest", lambda a, b: seen.append(1) or real(a, b))
    verify(GOOD, SID, {"kid1": KEY}, NOW)
    verify(_flip(GOOD, -1), SID, {"kid1": KEY}, NOW)
    assert len(seen) == 2


def test_api_key_digest_is_sha256():
    assert api_key_digest("lxk_abc") == hashlib.sha256(b"lxk_abc").hexdigest()
    assert api_key_digest("a") != api_key_digest("b")
