"""Starting framepipe processes: the one spawner that ``framepipe run``, ``framepipe worker
-n N``, the bench and the tests use.

Children are started as ``python -m framepipe <component>``, in their own process group
(a Ctrl-C in the terminal reaches the parent only, which stops them in order), and die
with their parent (PR_SET_PDEATHSIG) so a killed launcher leaves no orphans.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("framepipe.run")

#: after SIGTERM, how long children get before they are killed
STOP_GRACE_S = 10.0
#: after the sources stopped, how long the rest get to drain before SIGTERM
DRAIN_S = 15.0


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:  # the launcher died before prctl: do not start an orphan
        os._exit(1)


class ChildSet:
    """Component processes started together and stopped together.

    A stop (SIGINT/SIGTERM to the launcher, or a child that failed) is staged when
    ``stop_first`` names the sources: they get SIGTERM first, so the end of stream
    drains every frame already taken through the rest of the pipeline; whoever is still
    running ``DRAIN_S`` after the sources ended gets SIGTERM, and ``STOP_GRACE_S`` after
    that, SIGKILL. A second signal skips the drain. Every child is reaped (no zombies)
    and dies with the launcher if the launcher itself is killed (no orphans).
    """

    def __init__(self, stop_first: tuple[str, ...] = (), followers: tuple[str, ...] = ()) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.codes: dict[str, int] = {}
        self.stop_first = stop_first
        #: children that only serve the others (workers): stopped once all the others ended
        self.followers = followers
        self._followers_stopped = False
        #: followers stopped because the run was over: their SIGTERM is not a failure
        self._released: set[str] = set()
        self._stop_at: float | None = None  # when the first stop was asked
        self._term_all_at: float | None = None  # when every child was sent SIGTERM
        self._sources_done: float | None = None  # when the last source exited, after a stop

    def start(self, name: str, argv: list[str], output: Any = None) -> None:
        """Start one child; ``output`` (a file) takes its stdout and stderr, else it shares ours."""
        # Own process group: a Ctrl-C in the terminal reaches the launcher only, which
        # then stops the children in order (sources first) instead of all at once.
        parent = os.getpid()
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=output,
            stderr=output,
            process_group=0,
            preexec_fn=(lambda: _die_with_parent(parent)) if sys.platform == "linux" else None,
        )

    def running(self, names: Any = None) -> list[str]:
        """Children still running (among ``names``, if given)."""
        return [
            n
            for n, p in self.procs.items()
            if n not in self.codes and p.poll() is None and (names is None or n in names)
        ]

    def signal_all(self, sig: int, names: Any = None) -> None:
        for name in self.running(names):
            try:
                self.procs[name].send_signal(sig)
            except ProcessLookupError:
                pass

    def request_stop(self, *, drain: bool = True) -> None:
        """First call: stop the sources (or everyone, if none is running or ``drain`` is
        off: a failed child leaves nothing to drain into); later calls: everyone."""
        now = time.monotonic()
        if self._stop_at is None:
            self._stop_at = now
            sources = self.running(self.stop_first) if drain else []
            if sources:
                log.info("stopping %s; the rest drain and follow", ", ".join(sources))
                self.signal_all(signal.SIGTERM, sources)
                return
        self._term_all(now)

    def _term_all(self, now: float) -> None:
        if self._term_all_at is None:
            self._term_all_at = now
            self.signal_all(signal.SIGTERM)

    def _escalate(self) -> None:
        """Drain, then SIGTERM, then SIGKILL: every step bounded."""
        if self._stop_at is None:
            return
        now = time.monotonic()
        if self._term_all_at is None:
            if self.running(self.stop_first):
                if now - self._stop_at > STOP_GRACE_S:
                    self._term_all(now)
                return
            if self._sources_done is None:
                self._sources_done = now
            if now - self._sources_done > DRAIN_S:
                log.warning("still running %g s after the sources stopped: %s", DRAIN_S, ", ".join(self.running()))
                self._term_all(now)
        elif now - self._term_all_at > STOP_GRACE_S:
            for name in self.running():
                log.error("%s did not stop within %g s: killed", name, STOP_GRACE_S)
                self.procs[name].kill()

    def _release_followers(self) -> None:
        """A worker that started after the sink's stop message never hears it: once
        everyone else has ended, the workers have nothing left to do, so stop them."""
        if self._followers_stopped or not self.followers:
            return
        others = [n for n in self.procs if n not in self.followers]
        if others and not self.running(others):
            self._followers_stopped = True
            late = self.running(self.followers)
            if late:
                log.info("run over: stopping %s", ", ".join(late))
                self._released.update(late)
                self.signal_all(signal.SIGTERM, late)

    def wait_all(self, *, stop_on_failure: bool = True, on_tick: Callable[[], None] | None = None) -> int:
        """Wait for every child; forward SIGINT/SIGTERM; return the worst exit code.

        ``on_tick`` is called about ten times a second meanwhile (the dashboard).
        """

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("%s: stopping all components", signal.Signals(signum).name)
            self.request_stop()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while len(self.codes) < len(self.procs):
                for name, proc in self.procs.items():
                    if name in self.codes:
                        continue
                    code = proc.poll()
                    if code is None:
                        continue
                    if name in self._released and code == -signal.SIGTERM:
                        # it was still starting (no handler yet) when the run ended: nothing lost
                        code = 0
                    self.codes[name] = code
                    if code != 0 and stop_on_failure and self._stop_at is None:
                        log.error("%s exited with code %d: stopping the others", name, code)
                        self.request_stop(drain=False)
                self._escalate()
                self._release_followers()
                if on_tick is not None:
                    on_tick()
                running = [p for n, p in self.procs.items() if n not in self.codes]
                if running:
                    try:
                        running[0].wait(timeout=0.1)  # a bounded wait on a child, not a sleep
                    except subprocess.TimeoutExpired:
                        pass
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return max((abs(c) for c in self.codes.values()), default=0)


def component_args(config_path: str | None, overrides: list[str]) -> list[str]:
    args: list[str] = []
    if config_path:
        args += ["--config", config_path]
    for item in overrides:
        args += ["--set", item]
    return args
