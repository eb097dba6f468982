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
    prober = Prober(reactor, table, lambda r, sids: reports.extend((sid, r) for sid in sids), 10.0, 5.0)
    table.on_change = prober.routes_changed
    table.load_snapshot(f.snapshot(*records))
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


def test_new_service_on_a_known_target_is_reported_at_once_with_its_result():
    ctr = f.container()
    first, second = f.service(ctr, name="a"), f.service(ctr, name="b")
    reactor, table, _, reports = setup(ctr, first)
    reactor.advance(0.25)
    reactor.tcpClients[-1][2].done(True)
    assert [sid for sid, _ in reports] == [first.service_id]
    table.apply([schema.Event("1-0", schema.KIND_SERVICE, schema.OP_PUT, second.service_id, second)])
    assert [sid for sid, _ in reports] == [first.service_id, second.service_id]
    assert reports[-1][1] == reports[0][1]  # the target's known result
    reactor.advance(0.25)
    reactor.tcpClients[-1][2].done(True)  # the re-probe confirms it: no news, no report
    assert len(reports) == 2


def test_moved_service_is_reported_for_its_new_target_and_the_old_one_is_dropped():
    old_ctr, new_ctr = f.container(address="127.0.0.2"), f.container(address="127.0.0.3")
    svc = f.service(old_ctr)
    reactor, table, prober, reports = setup(old_ctr, new_ctr, svc)
    reactor.advance(0.25)
    reactor.tcpClients[-1][2].done(True)
    moved = svc.with_changes(container_id=new_ctr.container_id)
    table.apply([schema.Event("1-0", schema.KIND_SERVICE, schema.OP_PUT, svc.service_id, moved)])
    reactor.advance(0.25)
    assert reactor.tcpClients[-1][0] == "127.0.0.3"
    reactor.tcpClients[-1][2].done(False)
    assert reports[-1][0] == svc.service_id and reports[-1][1].target == "127.0.0.3:7001"
    assert reports[-1][1].status == "target_unreachable"
    reactor.advance(10.25)  # the old target's next turn finds no member left: no probe, no state
    assert [h for h, *_ in reactor.tcpClients].count("127.0.0.2") == 1
    assert ("127.0.0.2", 7001) not in prober.targets


def test_deleted_service_is_never_reported():
    ctr = f.container()
    kept, gone = f.service(ctr, name="k"), f.service(ctr, name="g")
    reactor, table, _, reports = setup(ctr, kept, gone)
    reactor.advance(0.25)
    table.apply([schema.Event("1-0", schema.KIND_SERVICE, schema.OP_DELETE, gone.service_id, None)])
    reactor.tcpClients[-1][2].done(True)
    assert [sid for sid, _ in reports] == [kept.service_id]


def test_relay_results_report_every_service_of_the_target_at_most_once_a_second():
    ctr = f.container()
    a, b = f.service(ctr, name="a"), f.service(ctr, name="b")
    reactor, table, prober, reports = setup(ctr, a, b)
    reactor.advance(0.25)
    reactor.tcpClients[-1][2].done(True)
    reports.clear()
    prober.observed(table.get(a.service_id), True)
    assert reports == []  # no news
    reactor.advance(1.0)
    prober.observed(table.get(a.service_id), False)
    assert sorted(sid for sid, r in reports if r.status == "target_unreachable") == sorted(
        [a.service_id, b.service_id]
    )
    # a flapping target (every request contradicts the last report): no report until a probe,
    # due a second after the last change, settles it
    for _ in range(50):
        prober.observed(table.get(b.service_id), True)
        prober.observed(table.get(a.service_id), False)
    assert len(reports) == 2 and len(reactor.tcpClients) == 1
    reactor.advance(1.0)
    assert len(reactor.tcpClients) == 2
    reactor.tcpClients[-1][2].done(True)
    assert len(reports) == 4 and {r.status for _, r in reports[2:]} == {"ready"}


def test_readiness_script_survives_odd_stored_values(redis_client, key_prefix):
    s = Schema(key_prefix)
    ctr = f.container()
    odd, plain = f.service(ctr, name="odd"), f.service(ctr, name="plain")
    pipe = redis_client.pipeline()
    pipe.multi()
    s.put_service(pipe, odd)
    s.put_service(pipe, plain)
    pipe.execute()
    redis_client.set(s.keys.status(odd.service_id), '{"status": "ready", "target": "x", "checked_at": null}')
    fresh = Readiness("ready", "127.0.0.1:7001", 1000)
    s.write_readiness_many(redis_client, [(fresh, [odd.service_id, plain.service_id])])
    assert s.read_readiness(redis_client, [odd.service_id, plain.service_id]) == {
        odd.service_id: fresh,
        plain.service_id: fresh,
    }


def test_one_readiness_written_for_many_services_in_one_call(redis_client, key_prefix):
    s = Schema(key_prefix)
    ctr = f.container()
    services = [f.service(ctr, name=f"s{i}") for i in range(1200)]  # more than one script batch
    pipe = redis_client.pipeline()
    pipe.multi()
    for svc in services[:-1]:  # the last one does not exist: it must get no status
        s.put_service(pipe, svc)
    pipe.execute()
    sids = [svc.service_id for svc in services]
    s.write_readiness(redis_client, sids[0], Readiness("ready", "127.0.0.1:7001", 1000))
    first = redis_client.get(s.keys.status(sids[0]))
    s.write_readiness_many(redis_client, [(Readiness("ready", "127.0.0.1:7001", 1010), sids)])
    stored = s.read_readiness(redis_client, sids)
    assert len(stored) == 1199 and sids[-1] not in stored
    assert redis_client.get(s.keys.status(sids[0])) == first  # unchanged within the refresh
    assert stored[sids[1]] == Readiness("ready", "127.0.0.1:7001", 1010)
    s.write_readiness_many(redis_client, [(Readiness("target_unreachable", "127.0.0.1:7001", 1011), sids)])
    assert {r.status for r in s.read_readiness(redis_client, sids).values()} == {"target_unreachable"}
    # several results in one call: each service gets its own
    other = Readiness("ready", "10.9.9.9:1", 1012)
    s.write_readiness_many(
        redis_client, [(other, sids[:3]), (Readiness("ready", "127.0.0.1:7001", 1013), sids[3:6])]
    )
    stored = s.read_readiness(redis_client, sids[:6])
    assert [stored[sid].target for sid in sids[:6]] == ["10.9.9.9:1"] * 3 + ["127.0.0.1:7001"] * 3


def test_probes_per_tick_are_bounded_and_the_rest_follow():
    from dataplane.probe import PROBES_PER_TICK

    ctr = f.container()
    services = [f.service(ctr, name=f"s{i}", target_port=20000 + i) for i in range(PROBES_PER_TICK + 40)]
    reactor, _, prober, _ = setup(ctr, *services)
    reactor.advance(0.25)
    assert len(reactor.tcpClients) == PROBES_PER_TICK
    for *_, factory, _t, _b in reactor.tcpClients:
        factory.done(True)
    reactor.advance(0.25)
    dialled = {port for _h, port, *_ in reactor.tcpClients}
    assert len(reactor.tcpClients) == PROBES_PER_TICK + 40 and len(dialled) == PROBES_PER_TICK + 40
    assert len(prober.targets) == PROBES_PER_TICK + 40


def test_probes_go_on_after_the_clock_jumps_forward():
    ctr = f.container()
    svc = f.service(ctr)
    reactor, _, prober, _ = setup(ctr, svc)
    reactor.advance(0.25)
    assert len(reactor.tcpClients) == 1
    reactor.tcpClients[-1][2].done(True)
    reactor.advance(86_400.0)  # a day later in one step (suspend, clock step): one probe, not a storm
    assert len(reactor.tcpClients) == 2
    reactor.tcpClients[-1][2].done(True)
    reactor.advance(10.0)
    assert len(reactor.tcpClients) == 3  # and every interval after that


def test_a_just_published_service_is_probed_ahead_of_a_backlog():
    from dataplane.probe import PROBES_PER_TICK

    ctr = f.container()
    fleet = [f.service(ctr, name=f"s{i}", target_port=20000 + i) for i in range(PROBES_PER_TICK * 3)]
    reactor, table, _, _ = setup(ctr, *fleet)
    reactor.advance(0.25)
    assert len(reactor.tcpClients) == PROBES_PER_TICK  # the round runs behind: a backlog
    for *_, factory, _t, _b in reactor.tcpClients:
        factory.done(True)
    new = f.service(ctr, name="new", target_port=9999)
    table.apply([schema.Event("1-0", schema.KIND_SERVICE, schema.OP_PUT, new.service_id, new)])
    reactor.advance(0.25)
    assert reactor.tcpClients[PROBES_PER_TICK][1] == 9999  # first in the next tick
    assert len(reactor.tcpClients) == 2 * PROBES_PER_TICK


def test_newcomer_is_reported_with_its_own_target_text_not_a_moved_members():
    for _ in range(20):  # the stale member is picked in set order: repeat to cover both orders
        ctr = f.container(address="127.0.0.2")
        x = f.service(ctr, name="x")
        reactor, table, _, reports = setup(ctr, x)
        reactor.advance(0.25)
        reactor.tcpClients[-1][2].done(True)
        moved = x.with_changes(target_port=7002)  # x leaves 127.0.0.2:7001 (a stale member there)
        table.apply([schema.Event("1-0", schema.KIND_SERVICE, schema.OP_PUT, x.service_id, moved)])
        y = f.service(ctr, name="y")  # and y arrives on it
        table.apply([schema.Event("2-0", schema.KIND_SERVICE, schema.OP_PUT, y.service_id, y)])
        assert [r.target for sid, r in reports if sid == y.service_id] == ["127.0.0.2:7001"]


def test_a_stream_of_changes_does_not_starve_the_round():
    from dataclasses import replace

    from dataplane.probe import PROBES_PER_TICK, TICK_SECS, URGENT_PER_TICK

    quiet = f.container(address="127.0.0.2")
    s = f.service(quiet, name="s")
    busy = f.container(address="127.0.0.3")
    fleet = [f.service(busy, name=f"b{i}", target_port=20000 + i) for i in range(PROBES_PER_TICK)]
    reactor, table, prober, _ = setup(quiet, s, busy, *fleet)
    for i in range(4 * 60):  # the busy container changes every tick for a minute
        busy = replace(busy, updated_at=2 + i)
        table.apply(
            [schema.Event(f"{i + 1}-0", schema.KIND_CONTAINER, schema.OP_PUT, busy.container_id, busy)]
        )
        reactor.advance(0.25)
        for *_, factory, _t, _b in reactor.tcpClients:
            factory.done(True)
    assert sum(1 for host, *_ in reactor.tcpClients if host == "127.0.0.2") >= 6  # every 10 s
    # superseded entries drain as their slots come round: bounded by one interval's hurries
    bound = len(prober.targets) + (10.0 / TICK_SECS + 1) * URGENT_PER_TICK
    assert sum(len(v) for v in prober.wheel.values()) <= bound


def test_lag_shows_when_the_round_runs_late():
    from dataplane.probe import PROBES_PER_TICK

    ctr = f.container()
    fleet = [f.service(ctr, name=f"s{i}", target_port=20000 + i) for i in range(PROBES_PER_TICK * 3)]
    reactor, _, prober, _ = setup(ctr, *fleet)
    assert prober.lag() == 0.0
    reactor.advance(0.25)
    for *_, factory, _t, _b in reactor.tcpClients:
        factory.done(True)
    reactor.advance(0.5)  # the rest of the round is still waiting
    assert prober.lag() > 0.0
    for _ in range(8):
        for *_, factory, _t, _b in reactor.tcpClients:
            factory.done(True)
        reactor.advance(0.25)
    assert prober.lag() == 0.0  # caught up: the next round is in the future


def test_a_refusing_target_is_reprobed_every_second_in_its_first_minute_then_every_interval():
    ctr = f.container()
    svc = f.service(ctr)
    reactor, _, _, reports = setup(ctr, svc)
    reactor.advance(0.25)
    reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(TxRefused()))
    assert [r.status for _, r in reports] == ["target_unreachable"]
    reactor.advance(1.25)
    assert len(reactor.tcpClients) == 2  # an app still starting: tried again a second later
    reactor.tcpClients[-1][2].done(True)
    assert [r.status for _, r in reports] == ["target_unreachable", "ready"]
    # past its first minute a refusing target waits for the interval
    reactor.advance(61)
    count = len(reactor.tcpClients)
    reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(TxRefused()))
    reactor.advance(1.25)
    assert len(reactor.tcpClients) == count
