"""Starting framepipe processes: the one spawner that ``framepipe run``, ``framepipe worker
-n N``, the bench and the tests use.

- :class:`Child`: one process (``python -m framepipe <component>``, see
  :func:`framepipe_argv`, or any argv) in its own process group (a Ctrl-C in the terminal
  reaches the parent only, which stops it in order) that dies with its parent
  (PR_SET_PDEATHSIG), so a killed launcher leaves no orphans. Its output goes to a log file
  or is shared with ours; every wait on it is bounded: on its exit, on text in its log, on
  any condition.
- :class:`ChildSet`: children started together and stopped together, sources first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from types import FrameType
from typing import IO, Protocol, TypeVar

from framepipe.core.errors import FramepipeError

T = TypeVar("T")

log = logging.getLogger("framepipe.run")

#: after SIGTERM, how long children get before they are killed
STOP_GRACE_S = 10.0
#: after the sources stopped, how long the rest get to drain before SIGTERM
DRAIN_S = 15.0
#: how often a bounded wait on a child looks at its condition again
WAIT_STEP_S = 0.05
#: how much of a child's log a failed wait quotes
LOG_TAIL_CHARS = 4000

#: the src/ directory this framepipe came from
SRC = str(Path(__file__).resolve().parents[2])


class ChildError(FramepipeError):
    """A child that exited, or did not, before what a bounded wait on it expected."""


def framepipe_argv(*args: str) -> list[str]:
    """The command line of a framepipe process run by this interpreter: ``python -m framepipe ...``."""
    return [sys.executable, "-m", "framepipe", *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment with this framepipe's src/ first on the path, so that a child runs
    the same code as its parent (a checkout, not whatever is installed), plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the log file as they are written
    env.update(extra or {})
    return env


def die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child before exec
    """Linux sends this process SIGTERM when ``parent`` dies (PR_SET_PDEATHSIG): no orphans.
    Exits at once if ``parent`` is already gone."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:  # the launcher died before prctl: do not start an orphan
        os._exit(1)


class Child:
    """One process started by framepipe, and every bounded wait on it.

    ``output``: a path (a log file, created; :meth:`log`, :meth:`wait_for` read it), an open
    file (stdout and stderr go there), or None (shared with ours).
    """

    #: what a bounded wait that fails raises (the tests raise AssertionError, the bench BenchError)
    failure: type[Exception] = ChildError

    def __init__(
        self,
        name: str,
        argv: list[str],
        output: Path | IO[bytes] | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | str | None = None,
        *,
        stdin: int | None = None,
    ):
        self.name = name
        self.argv = argv
        self.log_path: Path | None = None
        if isinstance(output, Path):
            self.log_path = output
            with open(output, "wb") as log_file:  # ours to close once the child has its own
                self.popen = self._spawn(argv, stdin, log_file, env, cwd)
        else:
            self.popen = self._spawn(argv, stdin, output, env, cwd)

    @staticmethod
    def _spawn(
        argv: list[str], stdin: int | None, out: IO[bytes] | None, env: dict[str, str] | None, cwd: Path | str | None
    ) -> subprocess.Popen[bytes]:
        # Own process group: a Ctrl-C in the terminal reaches the launcher only, which
        # then stops the children in order (sources first) instead of all at once.
        parent = os.getpid()
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=out,
            stderr=None if out is None else subprocess.STDOUT,
            env=env,
            cwd=cwd,
            process_group=0,
            preexec_fn=(lambda: die_with_parent(parent)) if sys.platform == "linux" else None,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it was seen to exit (negative: the signal that ended it)."""
        return self.popen.returncode

    def poll(self) -> int | None:
        """The exit code if it has exited (reaped here), else None."""
        return self.popen.poll()

    def wait_briefly(self, timeout: float) -> int | None:
        """Block at most ``timeout`` seconds for it to exit: a bounded wait, not a sleep."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def log(self) -> str:
        """Its log so far ("" when its output is not a log file)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self) -> str:
        where = f" (log {self.log_path})" if self.log_path is not None else ""
        return f"{where}:\n{self.log()[-LOG_TAIL_CHARS:]}"

    def wait(self, timeout: float = 60.0) -> int:
        """Its exit code; :attr:`failure` if it is still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.failure(f"{self.name} still running after {timeout:g} s{self._tail()}")
            self.wait_briefly(left)
        return code

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Until ``text`` appears in its log (e.g. ``ready:``); returns the log."""

        def seen() -> str | None:
            out = self.log()
            return out if text in out else None

        return self.wait_until(seen, repr(text), timeout)

    def wait_until(self, check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
        """Until ``check()`` returns something (not None) while it runs; :attr:`failure`
        if it exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got is not None:
                return got
            if self.poll() is not None:
                raise self.failure(f"{self.name} exited ({self.returncode}) before {what}{self._tail()}")
            self.wait_briefly(WAIT_STEP_S)
        raise self.failure(f"{self.name}: {what} not seen within {timeout:g} s{self._tail()}")

    def signal(self, sig: int) -> None:
        """Send ``sig`` if it is still running."""
        if self.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL if it is still running, and reap it. Safe twice."""
        self.signal(signal.SIGKILL)
        self.wait(timeout)


class ChildHandle(Protocol):
    """What :class:`ChildSet` needs of a child (a :class:`Child`; a fake in unit tests)."""

    def poll(self) -> int | None: ...
    def wait_briefly(self, timeout: float) -> int | None: ...
    def signal(self, sig: int) -> None: ...


class ChildSet:
    """Component processes started together and stopped together.

    A stop (SIGINT/SIGTERM to the launcher, or a child that failed) is staged when
    ``stop_first`` names the sources: they get SIGTERM first, so the end of stream
    drains every frame already taken through the rest of the pipeline; whoever is still
    running ``DRAIN_S`` after the sources ended gets SIGTERM, and ``STOP_GRACE_S`` after
    that, SIGKILL. A second signal skips the drain. Every child is reaped (no zombies)
    and dies with the launcher if the launcher itself is killed (no orphans).
    """

    def __init__(
        self,
        stop_first: tuple[str, ...] = (),
        followers: tuple[str, ...] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.procs: dict[str, ChildHandle] = {}
        self.codes: dict[str, int] = {}
        self.stop_first = stop_first
        #: children that only serve the others (workers): stopped once all the others ended
        self.followers = followers
        self.clock = clock
        self._followers_stopped = False
        #: followers stopped because the run was over: their SIGTERM is not a failure
        self._released: set[str] = set()
        self._stop_at: float | None = None  # when the first stop was asked
        self._term_all_at: float | None = None  # when every child was sent SIGTERM
        self._sources_done: float | None = None  # when the last source exited, after a stop

    def start(self, name: str, argv: list[str], output: IO[bytes] | None = None) -> Child:
        """Start one child; ``output`` (a file) takes its stdout and stderr, else it shares ours."""
        child = Child(name, argv, output)
        self.add(name, child)
        return child

    def add(self, name: str, child: ChildHandle) -> None:
        """Take charge of a child already started."""
        self.procs[name] = child

    def running(self, names: Collection[str] | None = None) -> list[str]:
        """Children still running (among ``names``, if given)."""
        return [
            n
            for n, p in self.procs.items()
            if n not in self.codes and p.poll() is None and (names is None or n in names)
        ]

    def signal_all(self, sig: int, names: Collection[str] | None = None) -> None:
        """Send ``sig`` to every child still running (among ``names``, if given)."""
        for name in self.running(names):
            self.procs[name].signal(sig)

    def request_stop(self, *, drain: bool = True) -> None:
        """First call: stop the sources (or everyone, if none is running or ``drain`` is
        off: a failed child leaves nothing to drain into); later calls: everyone."""
        now = self.clock()
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
        now = self.clock()
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
                self.procs[name].signal(signal.SIGKILL)

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
                    running[0].wait_briefly(0.1)  # a bounded wait on a child, not a sleep
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
