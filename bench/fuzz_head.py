"""Coverage-guided fuzzing of the pure head parser and the chunked decoder (atheris / libFuzzer).

Not part of CI: run it on demand, for as long as you like::

    pip install atheris            # needs clang's libFuzzer; wheels exist for Linux x86-64
    python bench/fuzz_head.py -max_total_time=600 -max_len=65536 bench/results/fuzz-corpus
    python bench/fuzz_head.py crash-<sha1>          # replay one finding

What it checks, for every input:

- ``parse_request_head`` either returns a ``RequestHead`` or raises ``HeadError`` with a 400 or
  431 status; no other exception. An accepted head has one framing (never both lengths and
  chunked), a non-negative length, a target starting with ``/`` and without ``#``, and a Host.
- ``ChunkedDecoder`` either raises ``HeadError`` or decodes; feeding the same bytes in one piece
  or split at an arbitrary point gives the same payload and the same end of body, and
  re-encoding the payload with ``encode_chunk`` decodes back to it.

The input's first byte chooses the target (head or chunked body), the second a split point.
A seed corpus (valid heads and bodies) is written to the corpus directory when it is empty.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dataplane.http_head import (  # noqa: E402
    LAST_CHUNK,
    ChunkedDecoder,
    Framing,
    HeadError,
    encode_chunk,
    parse_request_head,
)

MAX_HEADERS = 100
SEEDS = [
    b"\x00\x00GET /linx/lnx_a/ HTTP/1.1\r\nHost: h.test\r\n\r\n",
    b"\x00\x00POST /u?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
    b"\x00\x00POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    b"\x00\x00GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"\x01\x03" + b"5;ext=1\r\nhello\r\n0\r\nX-T: v\r\n\r\n",
    b"\x01\x07" + b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
]


def check_head(data: bytes) -> None:
    head = data if data.endswith(b"\r\n\r\n") else data + b"\r\n\r\n"
    try:
        req = parse_request_head(head, MAX_HEADERS)
    except HeadError as exc:
        assert exc.status in (400, 431), exc.status
        return
    assert req.target.startswith(b"/") and b"#" not in req.target
    assert req.host
    assert req.framing in (Framing.NONE, Framing.LENGTH, Framing.CHUNKED)
    assert req.content_length >= 0
    names = [n.lower() for n, _ in req.headers]
    assert not (b"content-length" in names and b"transfer-encoding" in names)
    assert names.count(b"content-length") <= 1 and names.count(b"host") == 1


def _decode(pieces: list[bytes]) -> tuple[bytes, bytes | None]:
    dec = ChunkedDecoder(400)
    out = []
    rest = None
    for i, piece in enumerate(pieces):
        got, rest = dec.feed(piece)
        out += got
        if rest is not None:
            return b"".join(out), rest + b"".join(pieces[i + 1 :])
    return b"".join(out), None


def check_chunked(data: bytes, split: int) -> None:
    try:
        whole, rest = _decode([data])
    except HeadError as exc:
        assert exc.status == 400
        whole, rest = None, None
    cut = split % (len(data) + 1)
    try:
        parts, rest2 = _decode([data[:cut], data[cut:]])
    except HeadError:
        parts, rest2 = None, None
    if whole is None or parts is None:
        return  # an error may surface only once its bytes arrive; both agreeing is not required
    if rest is not None:
        assert (parts, rest2) == (whole, rest), (data, cut)
        again, tail = _decode([b"".join(encode_chunk(whole)) + LAST_CHUNK if whole else LAST_CHUNK])
        assert again == whole and tail == b""


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    kind, split, body = data[0], data[1], data[2:]
    if kind % 2 == 0:
        check_head(body)
    else:
        check_chunked(body, split)


def main() -> None:
    import atheris  # imported here so that the module can be read (and linted) without it

    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus and os.path.isdir(corpus[0]) and not os.listdir(corpus[0]):
        for i, seed in enumerate(SEEDS):
            with open(os.path.join(corpus[0], f"seed-{i}"), "wb") as f:
                f.write(seed)
    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
