"""Moving a long Content-Length body from one socket to another in the kernel (splice(2)).

A bulk download through the relay is two copies per byte, into Python and out again, and
those copies are nearly all of its CPU: strace of a 512 MiB download shows nothing but 256 KiB
``recvfrom`` and ``sendto`` calls. Through a pipe, ``splice`` moves the pages without copying
them into user space (measured beside a recv/send loop on the same 1 GiB: 0.22-0.28 s of CPU
against 0.55-0.88 s). The relay hands a response body over to a ``Splice`` once the head is
out, the body has at least ``MIN_BYTES`` left and both ends are plain TCP with nothing queued.

While it runs, both Twisted transports stop reading and the splice watches the two
descriptors itself (one reader, one writer object, as the reactor expects), so a slow client
stops reads from the container (back-pressure). At most ``TURN_BYTES`` move per reactor turn,
so one transfer cannot starve other connections. ``done()`` hands both transports back.

A request body (an upload) moves the same way, with one difference: the container may answer
before the body is in, and may go on reading it while it answers (a streaming echo, say). So
that splice also watches the container's descriptor for reads and, at its first readable
byte, or at anything unexpected on either side, *interrupts*: it stops, gives what is in the
pipe and what is still to come to ``on_interrupt``, and both transports read again, so the
rest of the exchange (the answer, an early close, a reset) takes the ordinary path, where
every one of those cases is already handled.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable

from dataplane.fastio import queued

MIN_BYTES = 1 << 20
TURN_BYTES = 4 << 20
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
AVAILABLE = hasattr(os, "splice")


def takeable(transport) -> bool:
    """A TCP transport, connected and not closing: its socket may be driven directly."""
    return (
        getattr(transport, "socket", None) is not None and transport.connected and not transport.disconnecting
    )


def can_splice(src, dst) -> bool:
    """Both are TCP transports that may be taken over now."""
    return AVAILABLE and takeable(src) and takeable(dst) and not queued(dst) and dst.producer is None


def unwatch(reactor, end, reading: bool, writing: bool) -> None:
    """Stop the reactor watching ``end`` (a splice's or a tunnel's descriptor)."""
    try:
        if writing:
            reactor.removeWriter(end)
        if reading:
            reactor.removeReader(end)
    except OSError:
        # Its socket is closed already: a connection aborted while the splice ran, torn
        # down before its protocol could stop us. The kernel has dropped the descriptor
        # from epoll; drop the reactor's record too (of both directions we watched), or a
        # new socket given the same number would never be watched (Twisted's epoll
        # reactor: _reads, _writes, _selectables).
        fd = end.fd
        if writing:
            reactor._writes.discard(fd)
        if reading:
            reactor._reads.discard(fd)
        if reactor._selectables.get(fd) is end:
            del reactor._selectables[fd]


class _End:
    """One descriptor as the reactor sees it: the source is watched for reads (more to move),
    the sink for writes (room again) and, for a request body, for reads (the container
    speaks)."""

    __slots__ = ("splice", "fd")

    def __init__(self, splice: Splice, fd: int) -> None:
        self.splice = splice
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def doRead(self):
        if self is self.splice.writer:
            self.splice.interrupt()
        else:
            self.splice.pump()

    def doWrite(self):
        self.splice.pump()

    def connectionLost(self, reason) -> None:
        self.splice.fail(self is self.splice.writer)

    def logPrefix(self) -> str:
        return "splice"


class Splice:
    """``count`` bytes from ``src``'s socket to ``dst``'s. ``on_moved(n)`` after each move,
    then ``on_done()``, or ``on_failed(dst_side)`` once (True: writing to ``dst`` failed; False:
    ``src`` closed or failed first): the splice has stopped by then, and both transports read
    again only after ``on_done``.

    With ``on_interrupt`` (a request body), ``dst`` is watched for reads too, and a readable
    ``dst`` or any failure calls ``on_interrupt(left, held)`` instead of ``on_failed``:
    ``held`` the bytes read from ``src`` and not yet written (to be sent before anything
    else), ``left`` the bytes of ``count`` not yet read; both transports read again."""

    def __init__(
        self,
        reactor,
        src,
        dst,
        count: int,
        on_moved: Callable[[int], None],
        on_done: Callable[[], None],
        on_failed: Callable[[bool], None] | None,
        on_interrupt: Callable[[int, bytes], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.src, self.dst = src, dst
        self.left = count  # still to read from src
        self.in_pipe = 0
        self.on_moved, self.on_done, self.on_failed = on_moved, on_done, on_failed
        self.on_interrupt = on_interrupt
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, _PIPE_BYTES)
        except OSError:
            pass  # above fs.pipe-max-size: the default 64 KiB pipe works, with more turns
        self.reader = _End(self, src.socket.fileno())
        self.writer = _End(self, dst.socket.fileno())
        self.reading = self.writing = False
        self.watching = False  # dst watched for reads (a request body: the container answers)
        self.active = True
        src.stopReading()
        dst.stopReading()
        dst.stopWriting()

    def start(self) -> None:
        if self.on_interrupt is not None:
            self.reactor.addReader(self.writer)
            self.watching = True
        self.pump()

    def pump(self) -> None:
        budget = TURN_BYTES
        src_fd, dst_fd = self.reader.fd, self.writer.fd
        while self.active:
            while self.in_pipe:
                try:
                    n = os.splice(self.pipe_r, dst_fd, self.in_pipe, flags=_FLAGS)
                except BlockingIOError:
                    self._want(write=True)
                    return
                except OSError:
                    self.fail(True)
                    return
                self.in_pipe -= n
                self.on_moved(n)
            if not self.left:
                self._finish()
                return
            if budget <= 0:
                self._want(write=False)  # level-triggered: read on at the next turn
                return
            try:
                n = os.splice(src_fd, self.pipe_w, min(self.left, _PIPE_BYTES), flags=_FLAGS)
            except BlockingIOError:
                self._want(write=False)
                return
            except OSError:
                self.fail(False)
                return
            if not n:  # the container closed before the whole body
                self.fail(False)
                return
            self.left -= n
            self.in_pipe += n
            budget -= n

    def _want(self, write: bool) -> None:
        reactor = self.reactor
        if write and not self.writing:
            reactor.addWriter(self.writer)
            self.writing = True
        elif not write and self.writing:
            reactor.removeWriter(self.writer)
            self.writing = False
        if not write and not self.reading:
            reactor.addReader(self.reader)
            self.reading = True
        elif write and self.reading:
            reactor.removeReader(self.reader)
            self.reading = False

    def stop(self) -> None:
        """Take the splice down (idempotent); the transports are not restarted."""
        if not self.active:
            return
        self.active = False
        if self.reading:
            unwatch(self.reactor, self.reader, reading=True, writing=False)
        if self.writing or self.watching:
            unwatch(self.reactor, self.writer, reading=self.watching, writing=self.writing)
        self.reading = self.writing = self.watching = False
        os.close(self.pipe_r)
        os.close(self.pipe_w)

    def _finish(self) -> None:
        self.stop()
        self._read_again()
        self.on_done()

    def _read_again(self) -> None:
        for transport in (self.src, self.dst):
            if transport.connected and not transport.disconnecting:  # not aborted meanwhile
                transport.startReading()

    def fail(self, dst_side: bool) -> None:
        if not self.active:
            return
        if self.on_interrupt is not None:
            self.interrupt()
            return
        self.stop()
        self.on_failed(dst_side)

    def interrupt(self) -> None:
        """Stop here and give back (request bodies only, see the class): what was read and not
        written, then reads on both sides again."""
        if not self.active:
            return
        held = []
        while self.in_pipe:
            try:
                piece = os.read(self.pipe_r, self.in_pipe)
            except OSError:  # cannot happen with bytes in the pipe; nothing to save if it does
                break
            if not piece:
                break
            held.append(piece)
            self.in_pipe -= len(piece)
        left = self.left
        self.stop()
        self._read_again()
        self.on_interrupt(left, b"".join(held))
