"""One JSON line per request, written in batches so logging never costs a syscall per request.

Lines never hold a token, a cookie value or a query string: the path is logged without its
query, and no header value is logged at all.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO

from twisted.internet.task import LoopingCall

FLUSH_SECS = 0.2
FLUSH_BYTES = 64 * 1024


class AccessLog:
    """Buffers lines on the reactor thread and flushes them every ``FLUSH_SECS`` or 64 KiB."""

    def __init__(self, reactor, stream: IO[str] | None) -> None:
        self.reactor = reactor
        self.stream = stream
        self.lines: list[str] = []
        self.size = 0
        self._loop = LoopingCall(self.flush)
        self._loop.clock = reactor

    @classmethod
    def from_target(cls, reactor, target: str) -> AccessLog:
        """``-``: standard output; ``off``: nothing; anything else: a file appended to."""
        if target == "off":
            return cls(reactor, None)
        if target == "-":
            return cls(reactor, sys.stdout)
        return cls(reactor, open(target, "a", encoding="utf-8"))  # noqa: SIM115 - lives with the process

    @property
    def enabled(self) -> bool:
        return self.stream is not None

    def start(self) -> None:
        if self.enabled:
            self._loop.start(FLUSH_SECS, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self.flush()

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        self.lines.append(line)
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.lines or self.stream is None:
            return
        data = "".join(self.lines)
        self.lines = []
        self.size = 0
        try:
            self.stream.write(data)
            self.stream.flush()
        except OSError:  # a closed stdout must not take the proxy down
            pass


def request_id(incoming: bytes | None) -> bytes:
    """A client's ``X-Request-Id`` when it is short and plain, else a fresh random one."""
    if incoming and len(incoming) <= 128 and _PLAIN.issuperset(incoming):
        return incoming
    return os.urandom(12).hex().encode()


_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
