"""The proxy process's use of the cyclic collector (dataplane.gc_policy)."""

from __future__ import annotations

import gc

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from dataplane import gc_policy
from dataplane.config import ProxyConfig
from dataplane.service import ProxyService
from tests.dataplane import factories as f
from tests.dataplane.test_relay_memory import Harness


def test_paused_disables_collection_and_restores_what_was_there():
    assert gc.isenabled()
    with gc_policy.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_policy.paused():
        raise RuntimeError("a snapshot read failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_policy.paused():
            pass
        assert not gc.isenabled()  # not switched on behind a caller that had it off
    finally:
        gc.enable()


@pytest.mark.parametrize("freeze", [True, False])
def test_a_full_snapshot_load_freezes_the_heap_only_in_the_proxy_process(freeze):
    svc = ProxyService(ProxyConfig(), MemoryReactorClock(), freeze_heap=freeze)
    ctr = f.container()
    gc.unfreeze()
    try:
        svc._load_snapshot(f.snapshot(ctr, f.service(ctr), f.service(ctr)))
        assert len(svc.ctx.table) == 2
        assert (gc.get_freeze_count() > 0) is freeze
    finally:
        gc.unfreeze()


def test_relayed_connections_leave_no_cyclic_garbage():
    # What freeze_long_lived relies on at a resync: the objects of connections open then are
    # freed by reference counting when they close, not left for the collector.
    h = Harness()
    gc.collect()
    with gc_policy.paused():
        for _ in range(50):
            proto, _tr = h.client()
            proto.dataReceived(h.request())
            up, _ = h.upstream()
            up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
            proto.connectionLost(Failure(ConnectionDone()))
            up.connectionLost(Failure(ConnectionDone()))
        h.reactor.advance(100)
        assert gc.collect() == 0
