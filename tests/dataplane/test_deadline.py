"""``Deadline``: fires exactly when due, re-arms instead of allocating, holds nothing when stopped."""

from __future__ import annotations

from twisted.internet.task import Clock

from dataplane.deadline import Deadline, FifoDeadlines


def test_fires_at_the_deadline_and_not_before():
    clock, fired = Clock(), []
    d = Deadline(clock)
    d.set(10, lambda: fired.append(clock.seconds()))
    clock.advance(9.99)
    assert fired == []
    clock.advance(0.01)
    assert fired == [10] and not d.pending


def test_a_later_deadline_keeps_the_pending_call_and_re_arms_when_it_fires():
    clock, fired = Clock(), []
    d = Deadline(clock)
    d.set(10, lambda: fired.append("head"))
    call = d.call
    d.clear()
    d.set(75, lambda: fired.append("idle"))
    assert d.call is call and len(clock.getDelayedCalls()) == 1  # no new DelayedCall
    clock.advance(10)
    assert fired == [] and d.call is not None and d.call.getTime() == 75
    clock.advance(65)
    assert fired == ["idle"]


def test_a_sooner_deadline_moves_the_pending_call():
    clock, fired = Clock(), []
    d = Deadline(clock)
    d.set(75, lambda: fired.append("idle"))
    d.set(1, lambda: fired.append("grace"))
    clock.advance(1)
    assert fired == ["grace"]
    clock.advance(100)
    assert fired == ["grace"]


def test_each_sooner_deadline_moves_the_call_again():
    clock, fired = Clock(), []
    d = Deadline(clock)
    d.set(75, lambda: fired.append("idle"))
    d.set(10, lambda: fired.append("head"))
    d.set(3, lambda: fired.append("grace"))
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == 3
    clock.advance(3)
    assert fired == ["grace"]


def test_many_set_clear_cycles_cost_one_delayed_call():
    clock = Clock()
    d = Deadline(clock)
    for _ in range(1000):
        d.set(10, lambda: None)
        clock.advance(0.001)
        d.clear()
    assert len(clock.getDelayedCalls()) == 1


def test_stop_cancels_the_pending_call():
    clock, fired = Clock(), []
    d = Deadline(clock)
    d.set(5, lambda: fired.append(1))
    d.stop()
    assert clock.getDelayedCalls() == [] and d.call is None
    clock.advance(10)
    assert fired == []


def test_fifo_deadlines_fire_each_at_its_own_instant_with_one_call_pending():
    clock = Clock()
    fifo = FifoDeadlines(clock, 10.0)
    fired = []
    fifo.add(lambda: fired.append(("a", clock.seconds())))
    clock.advance(3)
    b = fifo.add(lambda: fired.append(("b", clock.seconds())))
    clock.advance(2)
    fifo.add(lambda: fired.append(("c", clock.seconds())))
    assert len(clock.getDelayedCalls()) == 1  # one timer however many deadlines
    FifoDeadlines.cancel(b)
    assert b[1] is None  # what it held is let go at once
    clock.advance(4.5)
    assert fired == []
    clock.advance(0.5)
    assert fired == [("a", 10.0)]
    clock.advance(5)  # b (due at 13) was cancelled
    assert fired == [("a", 10.0), ("c", 15.0)]
    assert clock.getDelayedCalls() == []


def test_fifo_deadlines_stop_drops_everything():
    clock = Clock()
    fifo = FifoDeadlines(clock, 1.0)
    fired = []
    fifo.add(lambda: fired.append(1))
    fifo.stop()
    clock.advance(2)
    assert fired == [] and clock.getDelayedCalls() == []


def test_with_a_horizon_the_routine_sooner_deadline_never_moves_the_call():
    # keep-alive: idle (75 s), then the next request's head (10 s), request after request
    clock, fired = Clock(), []
    d = Deadline(clock, horizon=10)
    for _ in range(100):
        d.set(75, lambda: fired.append("idle"))
        clock.advance(0.5)
        call, due = d.call, d.call.getTime()
        d.set(10, lambda: fired.append("head"))
        assert d.call is call and call.getTime() == due  # not reset (a heap scan in Twisted)
        clock.advance(0.01)
        d.clear()
    assert fired == [] and len(clock.getDelayedCalls()) == 1


def test_a_deadline_past_the_horizon_fires_exactly_when_due():
    clock, fired = Clock(), []
    d = Deadline(clock, horizon=10)
    d.set(75, lambda: fired.append(clock.seconds()))
    for _ in range(7):
        clock.advance(10)
        assert fired == [] and d.call.getTime() <= clock.seconds() + 10
    clock.advance(4.99)
    assert fired == []
    clock.advance(0.01)
    assert fired == [75]


def test_with_a_horizon_a_head_deadline_after_idle_is_not_a_move():
    clock = Clock()
    d = Deadline(clock, horizon=10)
    d.set(75, lambda: None)
    before = d.call.getTime()
    clock.advance(3)
    d.set(10, lambda: None)  # due at 13, the call at 10: it re-arms then, no reset now
    assert d.call.getTime() == before == 10
