"""Readiness probes: one connect per target per interval, results fanned out to its services."""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError as TxRefused
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from dataplane.probe import Prober
from dataplane.routes import RouteTable
from shared import schema
from shared.schema import Readiness, Schema
from tests.dataplane import factories as f


def setup(*records):
    reactor = MemoryReactorClock()
    table = RouteTable(f.ALLOWED)
    reports = []
    prober = Prober(reactor, table, lambda sid, r: reports.append((sid, r)), 10.0, 5.0)
    table.on_change = prober.routes_changed
    services = {r.service_id: r for r in records if hasattr(r, "service_id")}
    containers = {r.container_id: r for r in records if not hasattr(r, "service_id")}
    table.load_snapshot(schema.Snapshot(schema.FeedCursor("e", "0-0", 0), containers, services))
    prober.start()
    return reactor, table, prober, reports


def test_services_sharing_a_target_share_one_probe():
    ctr = f.container()
    a, b = f.service(ctr, name="a"), f.service(ctr, name="b")
    other = f.service(ctr, name="c", target_port=9999)
    reactor, _, _, reports = setup(ctr, a, b, other)
    reactor.advance(0.25)
    dialled = sorted((h, p) for h, p, *_ in reactor.tcpClients)
    assert dialled == [("127.0.0.1", 7001), ("127.0.0.1", 9999)]
    # the 7001 probe connects: both of its services become ready, reported once each
    factory = next(c[2] for c in reactor.tcpClients if c[1] == 7001)
    factory.done(True)
    assert sorted(sid for sid, r in reports if r.status == "ready") == sorted([a.service_id, b.service_id])
    refused = next(c[2] for c in reactor.tcpClients if c[1] == 9999)
    refused.clientConnectionFailed(None, Failure(TxRefused()))
    assert (other.service_id, "target_unreachable") in [(sid, r.status) for sid, r in reports]


def test_reprobed_every_interval_and_unchanged_results_not_reported_again():
    ctr = f.container()
    svc = f.service(ctr)
    reactor, _, _, reports = setup(ctr, svc)
    reactor.advance(0.25)
    reactor.tcpClients[-1][2].done(True)
    assert len(reports) == 1
    reactor.advance(9.5)
    assert len(reactor.tcpClients) == 1
    reactor.advance(0.75)
    assert len(reactor.tcpClients) == 2  # the interval came round
    reactor.tcpClients[-1][2].done(True)
    assert len(reports) == 1  # same answer: no news, no write


def test_unusable_container_is_not_probed_and_target_outside_networks_is_unreachable():
    stopped = f.container(state="stopped")
    far = f.container(address="169.254.169.254")
    a, b = f.service(stopped), f.service(far)
    reactor, _, _, reports = setup(stopped, far, a, b)
    reactor.advance(0.25)
    assert reactor.tcpClients == []
    assert reports == [(b.service_id, reports[0][1])] and reports[0][1].status == "target_unreachable"


def test_readiness_write_is_skipped_when_nothing_changed(redis_client, key_prefix):
    s = Schema(key_prefix)
    ctr = f.container()
    svc = f.service(ctr)
    pipe = redis_client.pipeline()
    pipe.multi()
    s.put_service(pipe, svc)
    pipe.execute()
    key = s.keys.status(svc.service_id)
    s.write_readiness(redis_client, svc.service_id, Readiness("ready", "127.0.0.1:7001", 1000))
    first = redis_client.get(key)
    s.write_readiness(redis_client, svc.service_id, Readiness("ready", "127.0.0.1:7001", 1030))
    assert redis_client.get(key) == first  # another replica saying the same thing: no write
    s.write_readiness(redis_client, svc.service_id, Readiness("ready", "127.0.0.1:7001", 1061))
    assert redis_client.get(key) != first  # a refresh after a minute
    s.write_readiness(redis_client, svc.service_id, Readiness("target_unreachable", "127.0.0.1:7001", 1062))
    assert s.read_readiness(redis_client, [svc.service_id])[svc.service_id].status == "target_unreachable"
    # a deleted service never gets a status back
    gone = f.service(ctr, name="gone")
    s.write_readiness(redis_client, gone.service_id, Readiness("ready", "127.0.0.1:7001", 1))
    assert redis_client.get(s.keys.status(gone.service_id)) is None
