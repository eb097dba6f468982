"""Probe results wait READINESS_FLUSH_SECS and go to Redis together (dataplane.service)."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from dataplane.config import ProxyConfig
from dataplane.service import READINESS_FLUSH_SECS, ProxyService
from shared.schema import Readiness


class _Pipe:
    def __init__(self):
        self.calls = []

    def eval(self, script, numkeys, *keys_and_args):
        self.calls.append(keys_and_args[:numkeys])


def test_probe_results_of_one_window_share_one_script_call():
    reactor = MemoryReactorClock()
    svc = ProxyService(ProxyConfig(), reactor)
    queue = svc.writer.queue
    svc._report_readiness(Readiness("ready", "127.0.0.1:7001", 1000), ["lnx_a"])
    reactor.advance(READINESS_FLUSH_SECS / 2)
    svc._report_readiness(Readiness("target_unreachable", "127.0.0.1:7002", 1000), ["lnx_b", "lnx_c"])
    assert queue.empty()
    reactor.advance(READINESS_FLUSH_SECS / 2)
    assert queue.qsize() == 1
    pipe = _Pipe()
    queue.get_nowait()(pipe)
    keys = svc.schema.keys
    assert pipe.calls == [
        tuple(k for sid in ("lnx_a", "lnx_b", "lnx_c") for k in (keys.service(sid), keys.status(sid)))
    ]
    # the next result opens a window of its own
    svc._report_readiness(Readiness("ready", "127.0.0.1:7001", 1001), ["lnx_a"])
    assert queue.empty()
    reactor.advance(READINESS_FLUSH_SECS)
    assert queue.qsize() == 1
