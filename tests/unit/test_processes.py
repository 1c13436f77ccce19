"""The staged stop and the restarts of :class:`ChildSet`, driven with fake children and a
fake clock.

Sources first, the rest drain, then SIGTERM, then SIGKILL; a failed child stops the rest
at once; workers that outlive everyone are released. A restartable child that dies is
started again after a backoff, within a limit. No process is started: a fake child exits
when the test says, and its bounded wait (or the set's pause) moves the clock instead of
waiting.
"""

from __future__ import annotations

import logging
import signal
from typing import IO

import pytest

from framepipe.runtime.processes import DRAIN_S, STOP_GRACE_S, ChildSet, RestartPolicy
from framepipe.testing.clock import FakeClock

TERM, KILL = signal.SIGTERM, signal.SIGKILL
#: fake seconds after which a wait_all that has not returned never will
GIVE_UP_S = 10 * (DRAIN_S + 2 * STOP_GRACE_S)


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
    clock = FakeClock(0.0)
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
    clock = FakeClock(0.0)
    children = ChildSet(clock=clock, stop_first=("publisher",))
    publisher, sink = FakeChild(clock, on_term=1.0), FakeChild(clock, on_term=0.5)
    children.add("publisher", publisher)
    children.add("sink", sink)

    _stop_on_first_tick(children, times=2)

    assert publisher.signals[0] == (0.0, TERM)
    assert sink.signals and sink.signals[0][1] == TERM and sink.signals[0][0] < 1.0, "not after a drain"


def test_a_failed_child_stops_every_other_at_once_and_its_code_is_returned() -> None:
    clock = FakeClock(0.0)
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
    clock = FakeClock(0.0)
    children = ChildSet(clock=clock, followers=("worker-0",))
    # started after the sink's stop message: it never hears it, and dies of the SIGTERM
    worker = FakeChild(clock, on_term=0.0, term_code=-TERM)
    children.add("sink", FakeChild(clock, exit_at=1.0))
    children.add("worker-0", worker)

    code = children.wait_all()

    assert [s for _, s in worker.signals] == [TERM]
    assert worker.signals[0][0] == pytest.approx(1.0, abs=0.25), "once everyone else has ended"
    assert code == 0 and children.codes["worker-0"] == 0


# ---------------------------------------------------------------- restarts

#: an incarnation of a fake child: seconds it lives (None: until signalled), its exit code
Life = tuple[float | None, int]


class FakeSpawner:
    """Starts fake children for a :class:`ChildSet`: the nth incarnation of ``name`` lives
    as ``lives[name][n]`` says (the last one again, once they are used up)."""

    def __init__(self, clock: FakeClock, lives: dict[str, list[Life]]) -> None:
        self.clock, self.lives = clock, lives
        #: when each incarnation of each child was started
        self.started: dict[str, list[float]] = {name: [] for name in lives}
        self.children: dict[str, list[FakeChild]] = {name: [] for name in lives}

    def __call__(self, name: str, argv: list[str], output: IO[bytes] | None) -> FakeChild:
        started = self.started[name]
        life, code = self.lives[name][min(len(started), len(self.lives[name]) - 1)]
        started.append(self.clock.now)
        child = FakeChild(self.clock, exit_at=None if life is None else self.clock.now + life, code=code)
        self.children[name].append(child)
        return child


def _supervised(
    lives: dict[str, list[Life]], policy: RestartPolicy = RestartPolicy(), **kwargs: tuple[str, ...]
) -> tuple[FakeClock, FakeSpawner, ChildSet]:
    """A set of restartable fake children; its pause (all of them in backoff) moves the clock."""
    clock = FakeClock(0.0)
    spawner = FakeSpawner(clock, lives)

    def pause(seconds: float) -> None:
        clock.advance(seconds)
        assert clock.now < GIVE_UP_S, f"still waiting after {GIVE_UP_S:g} s"

    children = ChildSet(clock=clock, pause=pause, restart_policy=policy, spawn=spawner, **kwargs)
    for name in lives:
        children.start(name, ["framepipe", name], restart=True)
    return clock, spawner, children


def test_a_child_that_keeps_dying_is_restarted_after_a_doubling_backoff_then_failed_at_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, spawner, children = _supervised({"sink": [(1.0, -KILL)]})
    publisher = FakeChild(clock)
    children.add("publisher", publisher)

    with caplog.at_level(logging.INFO, logger="framepipe.run"):
        code = children.wait_all()

    # dies 1 s after each start; waits 0.5, 1, 2, 4, 8 s; the 6th death is over 5 a minute
    assert spawner.started["sink"] == pytest.approx([0.0, 1.5, 3.5, 6.5, 11.5, 20.5])
    assert children.restarts == {"sink": 5, "publisher": 0}
    assert children.codes["sink"] == -KILL, "the code of its last incarnation"
    assert code == 1, "a death by signal is a failure, never the raw signal number"
    assert [s for _, s in publisher.signals] == [TERM], "a failed child stops the others"
    assert publisher.signals[0][0] == pytest.approx(21.5)
    assert "sink exited with code -9 (SIGKILL): restarting in 0.5 s (restart 1 of at most 5 per minute)" in caplog.text
    assert "sink exited with code -9 (SIGKILL): restarting in 8 s (restart 5 of at most 5 per minute)" in caplog.text


def test_the_backoff_stops_doubling_at_its_ceiling() -> None:
    _, spawner, children = _supervised({"sink": [(1.0, 1)]}, RestartPolicy(max_restarts=7))

    assert children.wait_all() == 1

    waits = [b - a - 1.0 for a, b in zip(spawner.started["sink"], spawner.started["sink"][1:], strict=False)]
    assert waits == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0])


def test_restarts_older_than_the_window_no_longer_count() -> None:
    # two restarts per 10 s; it dies every 6 to 7 s, so never more than one in any 10 s
    lives: list[Life] = [(6.0, 1)] * 5 + [(1.0, 0)]
    _, spawner, children = _supervised({"sink": lives}, RestartPolicy(max_restarts=2, window_s=10.0, stable_s=5.0))

    assert children.wait_all() == 0

    assert len(spawner.started["sink"]) == 6 and children.restarts == {"sink": 5}
    assert children.codes == {"sink": 0}


def test_a_child_that_stayed_up_long_enough_is_restarted_after_the_first_backoff_again() -> None:
    # up 40 s each time (stable after 30 s): 0.5 s each time, never 1, 2...
    _, spawner, children = _supervised({"sink": [(40.0, -KILL)] * 3 + [(1.0, 0)]})

    assert children.wait_all() == 0

    assert spawner.started["sink"] == pytest.approx([0.0, 40.5, 81.0, 121.5])
    assert children.restarts == {"sink": 3} and children.codes == {"sink": 0}


def test_a_child_that_ends_cleanly_is_done_not_restarted() -> None:
    _, spawner, children = _supervised({"worker-0": [(1.0, 0)], "worker-1": [(3.0, 0)]})

    assert children.wait_all() == 0

    assert spawner.started == {"worker-0": [0.0], "worker-1": [0.0]}
    assert children.restarts == {"worker-0": 0, "worker-1": 0}


def test_a_child_that_dies_while_the_set_stops_is_not_restarted() -> None:
    clock, spawner, children = _supervised({"worker-0": [(0.5, -KILL)]}, stop_first=("publisher",))
    children.add("publisher", FakeChild(clock, on_term=1.0))  # the drain lasts past the death

    _stop_on_first_tick(children)

    assert spawner.started["worker-0"] == [0.0]
    assert children.restarts["worker-0"] == 0 and children.codes["worker-0"] == -KILL


def test_a_stop_cancels_a_restart_waiting_in_backoff_and_the_set_ends() -> None:
    clock, spawner, children = _supervised({"worker-0": [(1.0, -KILL)]})
    sink = FakeChild(clock)
    children.add("sink", sink)
    asked = False

    def stop_during_backoff() -> None:
        nonlocal asked
        if clock.now >= 1.2 and not asked:  # worker-0 died at 1.0, restarts at 1.5
            asked = True
            children.request_stop()

    code = children.wait_all(on_tick=stop_during_backoff)

    assert spawner.started["worker-0"] == [0.0], "not restarted into a stopping set"
    assert sink.signals[0][1] == TERM and sink.signals[0][0] < 1.5
    assert code == 0 and children.codes == {"worker-0": 0, "sink": 0}, "its death was handled: nothing failed"


def test_followers_are_not_released_while_another_child_waits_to_restart() -> None:
    clock, spawner, children = _supervised({"sink": [(1.0, -KILL), (2.0, 0)]}, followers=("worker-0",))
    worker = FakeChild(clock)
    children.add("worker-0", worker)

    assert children.wait_all() == 0

    assert spawner.started["sink"] == pytest.approx([0.0, 1.5])
    assert [s for _, s in worker.signals] == [TERM]
    assert worker.signals[0][0] == pytest.approx(3.5), "once the restarted sink ended, not while it was down"


def test_signals_only_restarts_a_crash_and_leaves_a_verdict_alone() -> None:
    """One acquisition: a child killed by a signal is started again; one exiting 1 (its file
    is incomplete) has given its verdict and is not."""
    clock = FakeClock()
    spawned: list[str] = []

    class Handle:
        def __init__(self, code: int | None) -> None:
            self.code = code

        def poll(self) -> int | None:
            return self.code

        def wait_briefly(self, timeout: float) -> int | None:
            return self.code

        def signal(self, sig: int) -> None:
            pass

    def spawn(name: str, argv: list[str], output: object) -> Handle:
        spawned.append(name)
        return Handle(None)

    children = ChildSet(clock=clock, pause=clock.advance, spawn=spawn, restart_policy=RestartPolicy(signals_only=True))
    children.start("crashed", ["x"], restart=True)
    children.start("verdict", ["y"], restart=True)
    assert children._restart_later("crashed", -9) is True
    assert children._restart_later("verdict", 1) is False
