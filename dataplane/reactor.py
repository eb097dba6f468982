"""The proxy's reactor: epoll without a logging context around every I/O event.

Twisted's epoll reactor runs each ready descriptor's read or write inside
``log.callWithLogger``, which builds a logging context per event; on a proxy that is a
large share of the time spent per request (py-spy: about a third of samples). This subclass
dispatches events directly and reports an unexpected exception from a handler the same way,
as one ``log.failure`` event. Only ``__main__`` installs it.
"""

from __future__ import annotations

import errno

from twisted.internet import epollreactor
from twisted.logger import Logger

from dataplane.fastio import DONE

log = Logger()


class DirectEPollReactor(epollreactor.EPollReactor):
    def __init__(self) -> None:
        super().__init__()
        self._closing: list = []  # transports to close at the end of this turn (close_soon)

    def doPoll(self, timeout):
        if self._closing:  # asked for by timed calls, which ran just before this
            self._close_pending()
            timeout = 0  # what the closes scheduled was not in the timeout: back soon
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        handle = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except Exception:
                log.failure("unhandled error in I/O handler of {selectable!r}", selectable=selectable)
        if self._closing:
            self._close_pending()

    doIteration = doPoll

    def close_soon(self, transport) -> None:
        """Close a connection with nothing left to send: no more events reach it now, and its
        ``connectionLost`` runs once the events of this turn are handled (``callLater(0)``
        without a timed call per connection: under a connection per request, one per request).

        No ``epoll_ctl`` either (``removeReader``/``removeWriter``): ``close(2)`` takes the
        descriptor out of the epoll set (it is not shared: CLOEXEC, no fork). Until then no
        poll runs, and an event of this turn meanwhile finds no reader; the descriptor stays
        open until the close, so its number cannot be reused under it."""
        fd = transport.fileno()
        self._reads.discard(fd)
        self._writes.discard(fd)
        if self._selectables.get(fd) is transport:
            del self._selectables[fd]
        self._closing.append(transport)

    def _close_pending(self) -> None:
        while self._closing:  # a close may ask for another (its upstream connection)
            closing, self._closing = self._closing, []
            for transport in closing:
                try:
                    transport.connectionLost(DONE)
                except Exception:
                    log.failure("unhandled error closing {transport!r}", transport=transport)


def install() -> DirectEPollReactor:
    from twisted.internet.main import installReactor

    reactor = DirectEPollReactor()
    installReactor(reactor)
    return reactor
