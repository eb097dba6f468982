"""Readiness: does each live service's target accept a TCP connection?

Probes run on the reactor (a plain connect, closed at once) when a route appears or changes,
every ``interval`` while it lives, and whenever a relay connect fails or succeeds. Results go
to Redis through ``RedisWriter`` only when they change (or once a minute as a refresh), so
several replicas neither flood Redis nor rewrite each other's answer at every probe.
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections.abc import Callable

from twisted.internet import protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dataplane.routes import Route, RouteTable
from shared.schema import Readiness

log = Logger()
REFRESH_SECS = 60.0
CHANGE_SECS = 1.0  # relay results change a target's reported status at most this often
MAX_IN_FLIGHT = 256
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


class Prober:
    """Schedules probes and reports results. Reactor thread only.

    State is per target (address, port), not per service: many services may share one, and
    100,000 routes must mean neither 100,000 connects every interval nor 100,000 entries of
    bookkeeping each. A service's membership of a target is checked against the route table
    when the target's result comes in, so a service that moved or went is dropped then.
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
        self.members: dict[tuple[str, int], set[str]] = {}
        self.unreported: dict[tuple[str, int], set[str]] = {}  # members whose readiness is not out yet
        self.last: dict[tuple[str, int], Readiness] = {}  # what its members were last reported as
        self.scheduled: dict[tuple[str, int], float] = {}
        self.changed_at: dict[tuple[str, int], float] = {}
        self.heap: list[tuple[float, tuple[str, int]]] = []
        self.in_flight: set[tuple[str, int]] = set()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor

    def start(self) -> None:
        self._loop.start(min(0.25, self.interval), now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def routes_changed(self, service_ids: set[str]) -> None:
        """Routes appeared, changed or went: (re)schedule their targets for a probe now."""
        now = self.reactor.seconds()
        get = self.table.get
        for sid in service_ids:
            route = get(sid)
            # An unusable container is not probed: the control plane derives
            # target_unreachable from the container itself.
            if route is not None and route.usable and route.target is not None:
                self._join(route)
                self._schedule(route.target, now)

    def _join(self, route: Route) -> None:
        target = route.target
        self.members.setdefault(target, set()).add(route.service_id)
        self.unreported.setdefault(target, set()).add(route.service_id)

    def _current(self, target: tuple[str, int], sid: str) -> Route | None:
        route = self.table.get(sid)
        if route is None or route.target != target or not route.usable:
            return None
        return route

    def _prune(self, target: tuple[str, int]) -> set[str]:
        """The target's members that still use it; forgets the target when none do."""
        sids = self.members.get(target)
        if sids:
            gone = [sid for sid in sids if self._current(target, sid) is None]
            sids.difference_update(gone)
            self.unreported.get(target, sids).difference_update(gone)
        if not sids:
            self.members.pop(target, None)
            self.unreported.pop(target, None)
            self.last.pop(target, None)
            self.scheduled.pop(target, None)
            self.changed_at.pop(target, None)
            return set()
        return sids

    def _schedule(self, target: tuple[str, int], when: float) -> None:
        current = self.scheduled.get(target)
        if current is not None and current <= when:
            return
        self.scheduled[target] = when
        heapq.heappush(self.heap, (when, target))

    def _tick(self) -> None:
        now = self.reactor.seconds()
        heap = self.heap
        while heap and heap[0][0] <= now and len(self.in_flight) < MAX_IN_FLIGHT:
            when, target = heapq.heappop(heap)
            if self.scheduled.get(target) != when:
                continue  # superseded by an earlier schedule, or the target is gone
            del self.scheduled[target]
            self._schedule(target, now + self.interval)
            self._probe(target)

    def _probe(self, target: tuple[str, int]) -> None:
        if target in self.in_flight:
            return
        sids = self._prune(target)
        if not sids:
            return
        if not self.table.get(next(iter(sids))).allowed:  # one address, one verdict for all
            self._result(target, False)
            return
        self.in_flight.add(target)

        def finished(ok: bool) -> None:
            self.in_flight.discard(target)
            self._result(target, ok)

        try:
            self.reactor.connectTCP(
                target[0], target[1], _ProbeFactory(finished), timeout=self.connect_timeout
            )
        except Exception:  # e.g. no socket left: a failed probe, not a stuck one
            log.failure("probe of {target} could not start", target=target)
            finished(False)

    def _result(self, target: tuple[str, int], ok: bool) -> None:
        """Report the target's readiness for every member when it is news (a change, or the
        once-a-minute refresh), else only for members never reported with it."""
        status = "ready" if ok else "target_unreachable"
        now = self.reactor.seconds()
        last = self.last.get(target)
        if last is not None and last.status == status and now - last.checked_at < REFRESH_SECS:
            news = self.unreported.pop(target, None)
            if not news:
                return
            readiness = last
        else:
            members = self._prune(target)  # only members still on this target
            if not members:
                return
            readiness = Readiness(status, self.table.get(next(iter(members))).target_text, int(now))
            self.last[target] = readiness
            self.changed_at[target] = now
            self.unreported.pop(target, None)
            self.report(readiness, list(members))
            return
        sids = [sid for sid in news if self._current(target, sid) is not None]
        if sids:
            self.report(readiness, sids)

    def probe(self, route: Route) -> None:
        """Probe ``route``'s target now (tests and operators; the schedule does the rest)."""
        if route.target is not None and route.usable:
            self._join(route)
            self._probe(route.target)

    def observed(self, route: Route | None, ok: bool) -> None:
        """A relay connect to ``route``'s target succeeded or failed: as good as a probe of it,
        except that relay results change a target's reported status at most once per
        ``CHANGE_SECS``; one arriving sooner has a probe settle it when the time comes. A
        flapping target costs one report of its services a second, not one per request.
        """
        if route is None or route.target is None or not route.usable:
            return
        target = route.target
        last = self.last.get(target)
        if last is not None and (last.status == "ready") == ok:
            return  # the common case on the request path: no news, two lookups
        if target not in self.members:
            self._join(route)
        due = self.changed_at.get(target, float("-inf")) + CHANGE_SECS
        if self.reactor.seconds() >= due:
            self._result(target, ok)
        else:
            self._schedule(target, due)


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

    def stop(self) -> None:
        self.queue.put(None)

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
