"""A connection's one timer, costing no ``DelayedCall`` per request.

Keep-alive traffic sets and clears a timeout several times per request (head, idle, the
container's response head, an idle pooled connection's expiry). ``callLater`` + ``cancel`` for
each is an object, a heap push and a cancellation the reactor must sweep later: measurable
at tens of thousands of requests a second. A ``Deadline`` keeps at most one ``DelayedCall``
per connection and only moves a number on ``set`` and ``clear``: a call that fires before the
current deadline re-arms itself for the rest, one that fires with no deadline does nothing.
So a deadline fires exactly when it is due (tests on ``task.Clock`` see the same instants),
and a busy connection re-arms about once per timeout period instead of per request.

A deadline sooner than the pending call must move it, and Twisted's ``DelayedCall.reset`` to a
sooner time finds the call in the reactor's heap by a linear scan: with 1,000 connections,
thousands of entries per move, the knee in CPU per request as connections grow. Keep-alive
moves one sooner every request (idle 75 s, then the next head's 10 s; a pooled container
connection's 300 s response timeout, then its 30 s pooled expiry). ``horizon``, the shortest
timeout a connection sets routinely, bounds how far ahead its call is scheduled, so those
deadlines are never sooner than the pending call; a long deadline costs a re-arm per horizon.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Deadline:
    __slots__ = ("reactor", "call", "due", "at", "fn", "horizon")

    def __init__(self, reactor, horizon: float = float("inf")) -> None:
        self.reactor = reactor
        self.call = None  # the pending DelayedCall, firing at or before ``at``
        self.due = 0.0  # when it fires (its getTime(), kept here: one method call less per set)
        self.at: float | None = None
        self.fn: Callable[[], object] | None = None
        self.horizon = horizon  # the pending call is at most this far ahead (see the module text)

    def set(self, delay: float, fn: Callable[[], object]) -> None:
        """Call ``fn`` in ``delay`` seconds unless set again or cleared before."""
        now = self.reactor.seconds()
        at = self.at = now + delay
        self.fn = fn
        call = self.call
        if call is None:
            ahead = min(delay, self.horizon)
            self.call = self.reactor.callLater(ahead, self._fire)
            self.due = now + ahead
        elif self.due > at:
            call.reset(delay)  # sooner than the pending one: move it
            self.due = at

    def clear(self) -> None:
        self.at = None
        self.fn = None

    def stop(self) -> None:
        """Clear and drop the pending call (the connection is gone: hold no reference)."""
        self.at = None
        self.fn = None
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()

    @property
    def pending(self) -> bool:
        return self.at is not None

    def _fire(self) -> None:
        self.call = None
        at = self.at
        if at is None:
            return
        now = self.reactor.seconds()
        if now < at:
            ahead = min(at - now, self.horizon)
            self.call = self.reactor.callLater(ahead, self._fire)
            self.due = now + ahead
            return
        fn = self.fn
        self.at = self.fn = None
        fn()


class FifoDeadlines:
    """Deadlines all of one length, due in the order they were set: one ``DelayedCall`` for
    all of them. Every connection's first head deadline runs from its start (SPEC: the head
    timeout), so at a new connection per request this saves a ``DelayedCall`` created and
    cancelled per connection. An entry is ``[due, fn]``; ``cancel`` drops ``fn`` (and the
    connection it holds) at once, the entry itself when it comes due.
    """

    __slots__ = ("reactor", "delay", "queue", "call")

    def __init__(self, reactor, delay: float) -> None:
        self.reactor = reactor
        self.delay = delay
        self.queue: deque[list] = deque()
        self.call = None

    def add(self, fn: Callable[[], object]) -> list:
        entry = [self.reactor.seconds() + self.delay, fn]
        self.queue.append(entry)
        if self.call is None:
            self.call = self.reactor.callLater(self.delay, self._fire)
        return entry

    @staticmethod
    def cancel(entry: list) -> None:
        entry[1] = None

    def _fire(self) -> None:
        self.call = None
        queue = self.queue
        now = self.reactor.seconds()
        while queue and queue[0][0] <= now:
            fn = queue.popleft()[1]
            if fn is not None:
                fn()
        while queue and queue[0][1] is None:
            queue.popleft()  # cancelled: no timer for them
        if queue and self.call is None:
            self.call = self.reactor.callLater(max(0.0, queue[0][0] - now), self._fire)

    def stop(self) -> None:
        self.queue.clear()
        call, self.call = self.call, None
        if call is not None and call.active():
            call.cancel()
