"""The component lifecycle: State transitions, the setup/teardown steps, stop from a signal.

A Component subclass with no sockets, driven directly: open() makes only the context.
"""

from __future__ import annotations

import signal

import pytest

from framepipe.config import Config
from framepipe.runtime.component import Component
from framepipe.runtime.status import State, StatusParts, StreamPeers


class Probe(Component):
    """Counts its setup and teardown calls; can be told to stop or fail during setup."""

    role = "probe"

    def __init__(self, *, stop_in_setup: bool = False, fail_in_setup: bool = False):
        super().__init__(Config(), "probe")
        self.stop_in_setup = stop_in_setup
        self.fail_in_setup = fail_in_setup
        self.setups = 0
        self.teardowns = 0

    def setup(self) -> None:
        self.setups += 1
        if self.stop_in_setup:
            self.stop()  # as a signal arriving while the sockets are being made
        if self.fail_in_setup:
            raise OSError("cannot open the camera")
        self.peers = ["recorder-frames"]  # made here: status_parts reads it without a guard

    def teardown(self) -> None:
        self.teardowns += 1

    def status_parts(self) -> StatusParts:
        return StatusParts(peers=StreamPeers(subscribers=self.peers))

    def run(self) -> int:
        self.open()
        self.ready()
        return 0


def test_states_follow_open_ready_stop_close_and_close_twice_is_harmless() -> None:
    probe = Probe()
    seen = [probe.state]
    probe.open()
    seen.append(probe.state)
    probe.open()  # once only
    probe.ready()
    seen.append(probe.state)
    probe.stop()
    seen.append(probe.state)
    assert probe.stopping
    probe.close()
    seen.append(probe.state)
    probe.close()
    assert seen == [State.CREATED, State.OPENING, State.RUNNING, State.STOPPING, State.CLOSED]
    assert (probe.setups, probe.teardowns) == (1, 1)
    assert probe.ctx is None and probe.state is State.CLOSED


def test_a_stop_during_setup_is_not_lost_when_ready_follows() -> None:
    with Probe(stop_in_setup=True) as probe:
        probe.run()
        assert probe.state is State.STOPPING and probe.stopping


def test_stop_before_open_then_close_never_sets_up() -> None:
    probe = Probe()
    probe.stop()
    assert probe.state is State.STOPPING
    probe.close()
    assert probe.state is State.CLOSED
    assert (probe.setups, probe.teardowns) == (0, 0), "teardown only undoes a setup that ran"


def test_an_exception_ends_in_failed_a_second_signal_in_closed() -> None:
    with pytest.raises(OSError), Probe(fail_in_setup=True) as failing:
        failing.run()
    assert failing.state is State.FAILED and failing.failure == "OSError: cannot open the camera"
    assert failing.teardowns == 0 and failing.ctx is None, "closed, without undoing a half setup"
    failing.close()
    assert failing.state is State.FAILED
    with pytest.raises(KeyboardInterrupt), Probe() as interrupted:
        interrupted.run()
        raise KeyboardInterrupt  # the second SIGINT: a hard stop, not a failure
    assert interrupted.state is State.CLOSED and interrupted.failure is None


def test_signals_stop_then_interrupt() -> None:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    probe = Probe()
    try:
        probe.install_signal_handlers()
        probe.run()
        signal.raise_signal(signal.SIGTERM)  # the handler runs before raise_signal returns
        assert probe.state is State.STOPPING
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        probe.close()
    assert probe.state is State.CLOSED


def test_status_shows_the_state_and_the_parts_only_once_set_up() -> None:
    probe = Probe()
    before = probe.current_status()
    assert before.state is State.CREATED and before.peers is None
    probe.run()
    running = probe.current_status({"published_per_s": 2.0})
    assert running.state is State.RUNNING and running.rates == {"published_per_s": 2.0}
    assert running.peers is not None and running.peers.subscribers == ["recorder-frames"]
    probe.close()
    assert probe.current_status().to_summary()["state"] == "closed"
