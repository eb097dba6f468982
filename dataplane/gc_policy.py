"""How the proxy process uses CPython's cyclic garbage collector.

Almost everything the proxy frees goes by reference counting; the cyclic collector only finds
cycles (tracebacks of failures, mostly). Left at its defaults it costs the proxy in three ways:

- every full collection walks the whole heap: about 50,000 objects of imports (11 ms) and,
  with 100,000 routes, 250,000 objects (55 ms; ``gc.collect()`` timed in a process holding
  them). Such a pause lands on whatever request allocated at that moment: it shows in the p99 of
  a busy proxy. ``freeze_long_lived`` moves what is alive after a full snapshot load (the
  imports and the table just loaded) out of the collector's sight: those objects are freed as
  before by reference counting, only never walked again;
- with many requests in flight (1,000 keep-alive clients), objects of requests still open
  survive young collections and are promoted, so full collections come often: 5% of the
  reactor's time at 1,000 connections, none at 50 (``python -m bench.profile --native``). A
  larger young generation (``tune``) lets most of a request's objects die before a collection
  sees them;
- building 100,000 routes at start-up makes 200,000 objects that all survive, each young
  collection walking them again (``paused``: about an eighth of the build's time).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Allocations between young collections (CPython's default is 700); the older generations keep
# their default ratios. A request allocates a few dozen tracked objects.
YOUNG_THRESHOLD = 10_000


def tune() -> None:
    """The proxy process's collector thresholds (``__main__`` only: they are process-wide)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def freeze_long_lived() -> None:
    """Everything alive now is taken as long-lived: never walked by a collection again.

    Called after a full snapshot has replaced the route table. A cycle alive now that becomes
    garbage later is not collected: at the first load there are no connections yet; at a
    resync the connections then open are its only candidates, and their objects do not form
    cycles (tests/dataplane/test_gc_policy.py: relayed connections leave no cyclic garbage)."""
    gc.freeze()


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection while building a snapshot (the sync thread): what is built there
    lives on. The collector is process-wide: for the build's duration (about a second at
    100,000 routes), cycles made by the reactor thread wait for the next collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
