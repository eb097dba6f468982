"""Access log lines are valid JSON whatever the path, and request ids are safe and unique."""

from __future__ import annotations

import io
import json

from twisted.internet.task import Clock

from dataplane.access_log import FLUSH_ROWS, FLUSH_SECS, AccessLog, request_id
from dataplane.http_head import parse_request_head


def test_lines_are_json_even_for_odd_paths_and_hold_no_query():
    out = io.StringIO()
    log = AccessLog(Clock(), out)
    req = parse_request_head(b'GET /linx/x/a"b\\c?linx_token=SECRET HTTP/1.1\r\nHost: h\r\n\r\n', 100)
    log.request(1.5, "lnx_x", req, 200, 3, 40, 0.0123, 0.002, b"127.0.0.1", None, b"abc")
    log.request(2.0, "", None, 400, 0, 0, 0.0, None, b"::1", "bad_host", b"")
    log.flush()
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["path"] == '/linx/x/a"b\\c' and first["status"] == 200 and first["upstream_ms"] == 2.0
    assert first["duration_ms"] == 12.3 and first["request_id"] == "abc" and first["error"] is None
    assert second == {
        "time": 2.0,
        "service": None,
        "method": None,
        "path": None,
        "status": 400,
        "bytes_in": 0,
        "bytes_out": 0,
        "duration_ms": 0.0,
        "upstream_ms": None,
        "client": "::1",
        "error": "bad_host",
        "request_id": None,
    }
    assert "SECRET" not in out.getvalue()


def test_lines_are_batched_until_flush():
    out = io.StringIO()
    log = AccessLog(Clock(), out)
    log.request(1.0, "s", None, 200, 0, 0, 0.0, None, b"1.2.3.4", None, b"r")
    assert out.getvalue() == ""
    log.flush()
    assert out.getvalue().count("\n") == 1


def test_a_full_batch_is_written_at_once_and_the_rest_on_the_timer_in_order():
    out = io.StringIO()
    clock = Clock()
    log = AccessLog(clock, out)
    log.start()
    for n in range(FLUSH_ROWS - 1):
        log.request(float(n), "s", None, 200, 0, n, 0.0, None, b"1.2.3.4", None, b"r")
    assert out.getvalue() == ""  # nothing formatted or written yet
    log.request(float(FLUSH_ROWS - 1), "s", None, 200, 0, FLUSH_ROWS - 1, 0.0, None, b"1.2.3.4", None, b"r")
    assert out.getvalue().count("\n") == FLUSH_ROWS  # a full batch does not wait for the timer
    log.request(9999.0, "s", None, 503, 0, 7, 0.0, None, b"1.2.3.4", "target_unavailable", b"r")
    clock.advance(FLUSH_SECS)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["bytes_out"] for line in lines] == [*range(FLUSH_ROWS), 7]
    assert lines[-1]["time"] == 9999.0 and lines[-1]["error"] == "target_unavailable"
    log.stop()


def test_request_ids():
    assert request_id(b"abc-123") == b"abc-123"
    assert request_id(b'evil"id') != b'evil"id'
    assert request_id(b"x" * 129) != b"x" * 129
    ids = [request_id(None) for _ in range(1000)]  # made in batches: across several of them
    assert len(set(ids)) == 1000 and all(len(i) == 24 for i in ids)
    prefix = ids[0][:16]
    assert all(i[:16] == prefix for i in ids)
    assert [int(i[16:], 16) for i in ids] == list(range(int(ids[0][16:], 16), int(ids[0][16:], 16) + 1000))


def test_request_ids_never_wrap_under_one_prefix(monkeypatch):
    from dataplane import access_log

    monkeypatch.setattr(access_log, "_IDS", [])
    monkeypatch.setattr(access_log, "_next", [b"a" * 16, (1 << 32) - 2 * access_log._BATCH])
    ids = [request_id(None) for _ in range(3 * access_log._BATCH)]
    assert len(set(ids)) == len(ids)
    assert ids[0] == b"a" * 16 + b"%08x" % ((1 << 32) - 2 * access_log._BATCH)
    assert ids[2 * access_log._BATCH - 1] == b"a" * 16 + b"ffffffff"
    after = ids[2 * access_log._BATCH :]  # a new random prefix, counting from 0 again
    assert after[0][:16] != b"a" * 16 and after[0][16:] == b"00000000"
    access_log._new_process()  # as in a forked child: a new prefix, nothing of the parent's left
    assert request_id(None)[:16] not in (b"a" * 16, after[0][:16])
