"""The staged stop of :class:`ChildSet`, driven with fake children and a fake clock.

Sources first, the rest drain, then SIGTERM, then SIGKILL; a failed child stops the rest
at once; workers that outlive everyone are released. No process is started: a fake child
exits when the test says, and its bounded wait moves the clock instead of waiting.
"""

from __future__ import annotations

import signal

import pytest

from framepipe.runtime.processes import DRAIN_S, STOP_GRACE_S, ChildSet

TERM, KILL = signal.SIGTERM, signal.SIGKILL
#: fake seconds after which a wait_all that has not returned never will
GIVE_UP_S = 10 * (DRAIN_S + 2 * STOP_GRACE_S)


class FakeClock:
    """Seconds since the test began; only the fake children's waits move it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeChild:
    """A child that exits with ``code`` at ``exit_at`` on its own (never, if None), ``on_term``
    seconds after a SIGTERM (never, if None) with ``term_code``, and at once on SIGKILL."""

    def __init__(
        self,
        clock: FakeClock,
        *,
        exit_at: float | None = None,
        code: int = 0,
        on_term: float | None = 0.0,
        term_code: int = 0,
    ) -> None:
        self.clock = clock
        self.exit_at, self.code = exit_at, code
        self.on_term, self.term_code = on_term, term_code
        #: (when, signal) of every signal it got while running
        self.signals: list[tuple[float, int]] = []

    def poll(self) -> int | None:
        return self.code if self.exit_at is not None and self.clock.now >= self.exit_at else None

    def wait_briefly(self, timeout: float) -> int | None:
        self.clock.now += timeout
        # every stage is bounded: a set still waiting long after them all never ends
        assert self.clock.now < GIVE_UP_S, f"children still running after {GIVE_UP_S:g} s"
        return self.poll()

    def signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        now = self.clock.now
        self.signals.append((now, sig))
        if sig == KILL:
            self.exit_at, self.code = now, -KILL
        elif self.on_term is not None and (self.exit_at is None or now + self.on_term < self.exit_at):
            self.exit_at, self.code = now + self.on_term, self.term_code


def _stop_on_first_tick(children: ChildSet, times: int = 1) -> None:
    """Wait for every child, asking for a stop on the first ``times`` ticks (Ctrl-C pressed that often)."""
    asked = 0

    def tick() -> None:
        nonlocal asked
        if asked < times:
            asked += 1
            children.request_stop()

    children.wait_all(on_tick=tick)


def test_a_stop_ends_the_sources_first_then_the_rest_drain_then_term_then_kill() -> None:
    clock = FakeClock()
    children = ChildSet(clock=clock, stop_first=("publisher",))
    publisher = FakeChild(clock, on_term=1.0)
    worker = FakeChild(clock, exit_at=5.0)  # drains its frames and ends on its own
    sink = FakeChild(clock, on_term=None)  # stuck: ignores SIGTERM
    for name, child in (("sink", sink), ("worker-0", worker), ("publisher", publisher)):
        children.add(name, child)

    _stop_on_first_tick(children)

    assert publisher.signals == [(0.0, TERM)], "only the source is stopped at first"
    assert worker.signals == [], "a child that drains in time is never signalled"
    (t_term, sig_term), (t_kill, sig_kill) = sink.signals
    assert sig_term == TERM and t_term == pytest.approx(1.0 + DRAIN_S, abs=0.25), "SIGTERM after the drain"
    assert sig_kill == KILL and t_kill == pytest.approx(t_term + STOP_GRACE_S, abs=0.25), "SIGKILL after the grace"
    assert children.codes == {"sink": -KILL, "worker-0": 0, "publisher": 0}


def test_a_second_stop_skips_the_drain() -> None:
    clock = FakeClock()
    children = ChildSet(clock=clock, stop_first=("publisher",))
    publisher, sink = FakeChild(clock, on_term=1.0), FakeChild(clock, on_term=0.5)
    children.add("publisher", publisher)
    children.add("sink", sink)

    _stop_on_first_tick(children, times=2)

    assert publisher.signals[0] == (0.0, TERM)
    assert sink.signals and sink.signals[0][1] == TERM and sink.signals[0][0] < 1.0, "not after a drain"


def test_a_failed_child_stops_every_other_at_once_and_its_code_is_returned() -> None:
    clock = FakeClock()
    children = ChildSet(clock=clock, stop_first=("publisher",))
    publisher, worker = FakeChild(clock), FakeChild(clock)
    children.add("publisher", publisher)
    children.add("worker-0", worker)
    children.add("sink", FakeChild(clock, exit_at=2.0, code=3))

    code = children.wait_all()

    assert code == 3
    for child in (publisher, worker):  # a dead sink leaves nothing to drain into
        assert [s for _, s in child.signals] == [TERM]
        assert child.signals[0][0] == pytest.approx(2.0, abs=0.25)


def test_workers_outliving_the_run_are_released_and_their_sigterm_is_no_failure() -> None:
    clock = FakeClock()
    children = ChildSet(clock=clock, followers=("worker-0",))
    # started after the sink's stop message: it never hears it, and dies of the SIGTERM
    worker = FakeChild(clock, on_term=0.0, term_code=-TERM)
    children.add("sink", FakeChild(clock, exit_at=1.0))
    children.add("worker-0", worker)

    code = children.wait_all()

    assert [s for _, s in worker.signals] == [TERM]
    assert worker.signals[0][0] == pytest.approx(1.0, abs=0.25), "once everyone else has ended"
    assert code == 0 and children.codes["worker-0"] == 0
