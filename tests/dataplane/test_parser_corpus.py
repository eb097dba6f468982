"""``parser_corpus.py``'s hostile and valid heads, through the relay in memory.

Every ``reject`` case (RFC 9112/9110 must-reject, or SPEC section 5's 400) must be answered
400/431 with nothing of it reaching a container, every ``accept`` case must be relayed, and
``policy`` cases must get an answer either way (never a crash or a hang).
"""

from __future__ import annotations

import re

import pytest

from tests.dataplane.parser_corpus import ACCEPT, CORPUS, REJECT
from tests.dataplane.test_relay_memory import Harness

# Where the proxy departs from the corpus's expectation, on the safe side, and what it answers
# instead (asserted, so a change in either direction is noticed):
DEPARTURES = {
    # llhttp refuses a trailing HTAB in Transfer-Encoding; refusing a valid-but-odd framing
    # header costs a client an error, never a desynchronisation.
    "te_trailing_tab": (400, "malformed_head"),
    # RFC 9110 2.5: SHOULD be treated as HTTP/1.1; a 505 would be defensible. Linx only speaks
    # 1.0 and 1.1 and says so with a 400.
    "http_1_2": (400, "unsupported_version"),
}
_LINE = re.compile(rb"^([^ \r\n]+) (/[^ \r\n]*)")


def _aimed(data: bytes, prefix: bytes) -> bytes:
    """The same bytes with an origin-form target moved under the service's prefix."""
    return _LINE.sub(lambda m: m.group(1) + b" " + prefix + m.group(2), data, count=1)


@pytest.mark.parametrize(
    "name,data,expected", [(c[0], c[1], c[2]) for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_corpus_case(name, data, expected):
    h = Harness()
    h.svc = h.svc.with_changes(auth_mode="public")
    h.load(h.svc, h.ctr)
    proto, tr = h.client()
    proto.dataReceived(_aimed(data, b"/linx/" + h.svc.service_id.encode()))
    sent = b""
    if h.reactor.tcpClients:
        _, utr = h.upstream()
        sent = utr.value()
    out = tr.value()
    status = int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else None
    if name in DEPARTURES:
        code, error = DEPARTURES[name]
        assert status == code and f"X-Linx-Error: {error}\r\n".encode() in out, (name, out[:200])
        assert not sent
    elif expected == REJECT:
        assert status in (400, 431, 501), (name, out[:200])
        assert tr.disconnecting, name
        # nothing reached a container, or only a canonical head before a body found malformed
        assert not sent or sent.count(b"\r\n\r\n") == 1, (name, sent[:300])
    elif expected == ACCEPT:
        assert status is None or status < 400, (name, out[:200])
        assert sent.startswith(data.split(b" ", 1)[0] + b" /"), (name, sent[:200])
    else:
        assert status is not None or sent, (name, "neither answered nor relayed")
