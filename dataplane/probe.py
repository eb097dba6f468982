"""Readiness: does each live service's target accept a TCP connection?

Probes run on the reactor (a plain connect, closed at once) when a route appears or changes,
every ``interval`` while it lives, and whenever a relay connect fails or succeeds. Results go
to Redis through ``RedisWriter`` only when they change (or once a minute as a refresh), so
several replicas neither flood Redis nor rewrite each other's answer at every probe.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable

from twisted.internet import protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dataplane.routes import Route, RouteTable
from shared.schema import Readiness

log = Logger()
REFRESH_SECS = 60.0
CHANGE_SECS = 1.0  # relay results change a target's reported status at most this often
# A target refusing in its first minute is usually an app still starting (published before it
# listens): it is re-probed every YOUNG_RETRY_SECS, so `linx wait-ready` sees it come up soon.
YOUNG_SECS = 60.0
YOUNG_RETRY_SECS = 1.0
TICK_SECS = 0.25
PROBES_PER_TICK = 256
URGENT_PER_TICK = PROBES_PER_TICK // 2
MAX_IN_FLIGHT = 256
URGENT = -1  # a target's ``due`` when it waits in the urgent queue
BATCH = 20  # tasks per pipeline; a readiness task writes up to READINESS_BATCH services


class _ProbeProtocol(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.done(True)
        # A clean close, not a reset: many servers log a reset connection as an error.
        self.transport.loseConnection()


class _ProbeFactory(protocol.ClientFactory):
    protocol = _ProbeProtocol
    noisy = False

    def __init__(self, callback: Callable[[bool], None]) -> None:
        self.callback = callback
        self.fired = False

    def done(self, ok: bool) -> None:
        if not self.fired:
            self.fired = True
            self.callback(ok)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.done(False)


def _readiness(target_text: str, ok: bool, when: float) -> Readiness:
    return Readiness("ready" if ok else "target_unreachable", target_text, int(when))


class _Target:
    """What the prober knows of one target (address, port): the services using it (one id, or
    a set of them: most targets have one), the last result reported for them (``ok`` None:
    none yet) and when, and when its next probe is due. One small object per target, so
    100,000 targets cost tens of MiB, not hundreds."""

    __slots__ = ("members", "ok", "reported_at", "due", "first_seen")

    def __init__(self, first_seen: float = 0.0) -> None:
        self.first_seen = first_seen
        self.members: str | set[str] | None = None
        self.ok: bool | None = None
        self.reported_at = float("-inf")
        self.due: int | None = None  # a wheel slot, or URGENT

    def add(self, sid: str) -> None:
        m = self.members
        if m is None:
            self.members = sid
        elif isinstance(m, str):
            if m != sid:
                self.members = {m, sid}
        else:
            m.add(sid)

    def ids(self) -> Iterable[str]:
        m = self.members
        return () if m is None else (m,) if isinstance(m, str) else m


class Prober:
    """Schedules probes and reports results. Reactor thread only.

    State is per target, not per service: many services may share one, and 100,000 routes
    must mean neither 100,000 connects every interval nor 100,000 entries of bookkeeping each.
    A service's membership of a target is checked against the route table when the target is
    probed, so a service that moved or went is dropped then. At most ``PROBES_PER_TICK`` probes
    start per tick (about 1,000 a second): with more targets than that per interval, each is
    probed less often rather than the proxy spending its CPU on probes.
    """

    def __init__(
        self,
        reactor,
        table: RouteTable,
        report: Callable[[Readiness, list[str]], None],
        interval: float,
        connect_timeout: float,
    ) -> None:
        self.reactor = reactor
        self.table = table
        self.report = report
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.targets: dict[tuple[str, int], _Target] = {}
        # A timing wheel of tick slots rather than a heap of (time, target) tuples: 8 bytes per
        # scheduled target instead of about 90. An entry is live iff its target's ``due`` is
        # still that slot (rescheduling leaves the old entry to be skipped).
        self.wheel: dict[int, list[tuple[str, int]]] = {}
        self.cursor = self._slot(reactor.seconds())
        # Targets of a few routes that just changed go before the wheel: with more targets
        # than the probe budget covers per interval, the wheel runs late, and a service just
        # published should not wait for a whole round to get its status.
        self.urgent: deque[tuple[str, int]] = deque()
        self.in_flight: set[tuple[str, int]] = set()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(TICK_SECS, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def routes_changed(self, service_ids: set[str]) -> None:
        """Routes appeared, changed or went: probe their targets now, ahead of the round when
        they are few (a snapshot's many go in order). A service joining a target with a known
        result is reported with it at once."""
        now = self.reactor.seconds()
        urgent = len(service_ids) <= PROBES_PER_TICK
        get = self.table.get
        known: dict[tuple[tuple[str, int], str], list[str]] = {}  # (target, its text) -> ids
        for sid in service_ids:
            route = get(sid)
            # An unusable container is not probed: the control plane derives
            # target_unreachable from the container itself.
            if route is not None and route.usable and route.target is not None:
                state = self._join(route)
                if state.ok is not None:
                    known.setdefault((route.target, route.target_text), []).append(sid)
                if urgent:
                    self._hurry(route.target, state)
                else:
                    self._schedule(route.target, state, now)
        for (target, text), sids in known.items():
            state = self.targets[target]
            self.report(_readiness(text, state.ok, state.reported_at), sids)

    def _join(self, route: Route) -> _Target:
        state = self.targets.get(route.target)
        if state is None:
            state = self.targets[route.target] = _Target(self.reactor.seconds())
        state.add(route.service_id)
        return state

    def _live(self, target: tuple[str, int], state: _Target) -> list[str]:
        """The target's members that still use it; forgets the target when none do."""
        get = self.table.get
        live = []
        for sid in state.ids():
            route = get(sid)
            if route is not None and route.target == target and route.usable:
                live.append(sid)
        if not live:
            del self.targets[target]
        elif len(live) == 1:
            state.members = live[0]
        elif not isinstance(state.members, set) or len(live) != len(state.members):
            state.members = set(live)
        return live

    @staticmethod
    def _slot(when: float) -> int:
        return math.ceil(when / TICK_SECS)  # a tick at or after ``when`` takes it

    def _schedule(self, target: tuple[str, int], state: _Target, when: float) -> None:
        slot = max(self._slot(when), self.cursor)
        if state.due is not None and state.due <= slot:
            return
        state.due = slot
        self.wheel.setdefault(slot, []).append(target)

    def lag(self) -> float:
        """Seconds the oldest probe still waiting in the round is overdue (0 when on time)."""
        if not self.wheel:
            return 0.0
        return max(0.0, self.reactor.seconds() - min(self.wheel) * TICK_SECS)

    def _hurry(self, target: tuple[str, int], state: _Target) -> None:
        if state.due != URGENT:
            state.due = URGENT
            self.urgent.append(target)

    def _tick(self) -> None:
        now = self.reactor.seconds()
        started = 0
        urgent = self.urgent
        # Changed routes go first but get half the budget at most: a stream of changes must
        # not starve the round.
        while urgent and started < URGENT_PER_TICK and len(self.in_flight) < MAX_IN_FLIGHT:
            target = urgent.popleft()
            state = self.targets.get(target)
            if state is None or state.due != URGENT:
                continue
            state.due = None
            self._schedule(target, state, now + self.interval)
            self._probe(target, state)
            started += 1
        last = math.floor(now / TICK_SECS)
        wheel = self.wheel
        while wheel:
            slot = min(wheel)  # a handful of slots: one interval's worth, or the backlog's
            if slot > last:
                break
            self.cursor = slot
            due = wheel[slot]
            while due:
                target = due[-1]
                state = self.targets.get(target)
                if state is None or state.due != slot:
                    due.pop()  # superseded by another schedule, or the target is gone: free
                    continue
                if started >= PROBES_PER_TICK or len(self.in_flight) >= MAX_IN_FLIGHT:
                    return  # this tick's budget is spent; the rest go first next tick
                due.pop()
                state.due = None
                self._schedule(target, state, now + self.interval)
                self._probe(target, state)
                started += 1
            del wheel[slot]
        self.cursor = last + 1

    def _probe(self, target: tuple[str, int], state: _Target) -> None:
        if target in self.in_flight:
            return
        live = self._live(target, state)
        if not live:
            return
        if not self.table.get(live[0]).allowed:  # one address, one verdict for all
            self._result(target, False)
            return
        self.in_flight.add(target)

        def finished(ok: bool) -> None:
            self.in_flight.discard(target)
            self._result(target, ok)
            now = self.reactor.seconds()
            if not ok and now - state.first_seen < YOUNG_SECS:
                self._schedule(target, state, now + YOUNG_RETRY_SECS)

        try:
            self.reactor.connectTCP(
                target[0], target[1], _ProbeFactory(finished), timeout=self.connect_timeout
            )
        except Exception:  # e.g. no socket left: a failed probe, not a stuck one
            log.failure("probe of {target} could not start", target=target)
            finished(False)

    def _result(self, target: tuple[str, int], ok: bool) -> None:
        """Report the target's readiness for every member when it is news: a change, or the
        once-a-minute refresh (the write itself is skipped in Redis when another replica
        already wrote the same)."""
        state = self.targets.get(target)
        if state is None:
            return
        now = self.reactor.seconds()
        if state.ok == ok and now - state.reported_at < REFRESH_SECS:
            return
        live = self._live(target, state)
        if not live:
            return
        state.ok, state.reported_at = ok, now
        self.report(_readiness(self.table.get(live[0]).target_text, ok, now), live)

    def probe(self, route: Route) -> None:
        """Probe ``route``'s target now (tests and operators; the schedule does the rest)."""
        if route.target is not None and route.usable:
            state = self._join(route)
            self._schedule(route.target, state, self.reactor.seconds() + self.interval)
            self._probe(route.target, state)

    def observed(self, route: Route | None, ok: bool) -> None:
        """A relay connect to ``route``'s target succeeded or failed: as good as a probe of it,
        except that relay results change a target's reported status at most once per
        ``CHANGE_SECS``; one arriving sooner has a probe settle it when the time comes. A
        flapping target costs one report of its services a second, not one per request.
        """
        if route is None or route.target is None or not route.usable:
            return
        state = self.targets.get(route.target)
        if state is not None and state.ok == ok:
            return  # the common case on the request path: no news, one lookup
        if state is None:
            state = self._join(route)
            self._schedule(route.target, state, self.reactor.seconds() + self.interval)
        due = state.reported_at + CHANGE_SECS
        if self.reactor.seconds() >= due:
            self._result(route.target, ok)
        else:
            self._schedule(route.target, state, due)


class RedisWriter:
    """Runs small Redis writes (readiness, share-link use) on its own thread and connection,
    so a slow or absent Redis never blocks the reactor. Writes are best effort: observations,
    not configuration; a failed one is logged and the next observation repeats it."""

    def __init__(self, client_factory: Callable[[], object]) -> None:
        self.client_factory = client_factory
        self.queue: queue.Queue = queue.Queue(maxsize=100_000)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="linx-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.0) -> None:
        """Let the thread finish what is queued and end; wait up to ``timeout`` seconds for it
        (at shutdown: the thread is a daemon, so exiting first would drop the last writes)."""
        self.queue.put(None)
        if timeout and self._thread is not None:
            self._thread.join(timeout)

    def submit(self, write: Callable[[object], None]) -> None:
        """Queue ``write(pipe)`` (a non-transactional pipeline); called from the reactor thread."""
        try:
            self.queue.put_nowait(write)
        except queue.Full:
            log.warn("redis writer queue full: dropping an update")

    def _run(self) -> None:
        client = None
        while True:
            batch = [self.queue.get()]
            # Everything already queued goes in the same round trip (a pipeline).
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            stop = None in batch
            writes = [w for w in batch if w is not None]
            try:
                if writes:
                    if client is None:
                        client = self.client_factory()
                    pipe = client.pipeline(transaction=False)
                    for write in writes:
                        write(pipe)
                    pipe.execute(raise_on_error=False)
            except Exception as exc:
                log.warn("redis writer: {err}", err=f"{type(exc).__name__}: {exc}")
            if stop:
                return
