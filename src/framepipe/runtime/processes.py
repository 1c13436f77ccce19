"""Starting framepipe processes: the one spawner that ``framepipe run``, ``framepipe worker
-n N``, the bench and the tests use.

- :class:`Child`: one process (``python -m framepipe <component>``, see
  :func:`framepipe_argv`, or any argv) in its own process group (a Ctrl-C in the terminal
  reaches the parent only, which stops it in order) that dies with its parent
  (PR_SET_PDEATHSIG), so a killed launcher leaves no orphans. Its output goes to a log file
  or is shared with ours; every wait on it is bounded: on its exit, on text in its log, on
  any condition.
- :class:`ChildSet`: children started together and stopped together, sources first; a
  child started with ``restart=True`` that dies is started again (:class:`RestartPolicy`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
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

#: how often wait_all looks at its children, forwards signals and calls on_tick
TICK_S = 0.1

#: the src/ directory this framepipe came from
SRC = str(Path(__file__).resolve().parents[2])


class ChildError(FramepipeError):
    """A child that exited, or did not, before what a bounded wait on it expected."""


def describe_exit(code: int) -> str:
    """``code 1``, or ``code -9 (SIGKILL)`` for a child ended by a signal."""
    if code < 0:
        try:
            return f"code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"code {code}"


def exit_status(code: int) -> int:
    """A child's exit code as the exit status of the command that ran it: a child ended by
    a signal (negative code) is a failure, 1, never a raw signal number."""
    return 1 if code < 0 else code


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


#: how a :class:`ChildSet` starts a child: (name, argv, output) → a running child
Spawn = Callable[[str, list[str], IO[bytes] | None], ChildHandle]


def _spawn_child(name: str, argv: list[str], output: IO[bytes] | None) -> ChildHandle:
    return Child(name, argv, output)


@dataclass(frozen=True)
class RestartPolicy:
    """When a child that died is started again.

    A crash loop must not spin the CPU nor hide a component that cannot start: the delay
    doubles from ``backoff_s`` up to ``max_backoff_s`` while the child keeps dying young,
    and is ``backoff_s`` again once an incarnation stayed up ``stable_s``; beyond
    ``max_restarts`` restarts within ``window_s`` the child is failed.
    """

    max_restarts: int = 5
    window_s: float = 60.0
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    stable_s: float = 30.0
    #: restart only a child killed by a signal (a crash, SIGKILL, the OOM killer), not one
    #: that exited with a code of its own: in a one-acquisition run, a component exiting 1
    #: has said its verdict (an incomplete file) and a new one would wait for a stream
    #: that is over
    signals_only: bool = False

    def window_text(self) -> str:
        return "per minute" if self.window_s == 60.0 else f"per {self.window_s:g} s"


@dataclass
class _Restartable:
    """A child that :class:`ChildSet` starts again when it dies: how, and its history."""

    argv: list[str]
    output: IO[bytes] | None
    started_at: float
    delay_s: float
    #: when each restart still within the policy's window was decided
    restarted_at: deque[float] = field(default_factory=deque)
    #: in backoff: when it is started again
    due_at: float | None = None


class ChildSet:
    """Component processes started together and stopped together.

    A stop (SIGINT/SIGTERM to the launcher, or a child that failed) is staged when
    ``stop_first`` names the sources: they get SIGTERM first, so the end of stream
    drains every frame already taken through the rest of the pipeline; whoever is still
    running ``DRAIN_S`` after the sources ended gets SIGTERM, and ``STOP_GRACE_S`` after
    that, SIGKILL. A second signal skips the drain. Every child is reaped (no zombies)
    and dies with the launcher if the launcher itself is killed (no orphans).

    A child started with ``restart=True`` that fails while the set is not stopping is
    started again, same argv and output, as ``restart_policy`` says: a component that
    dies is replaced instead of ending the run. One that exits 0 is done. One over the
    policy's limit is failed like any other. ``procs[name]`` is always the latest
    incarnation, ``codes[name]`` its exit code and ``restarts[name]`` how often it was
    restarted.
    """

    def __init__(
        self,
        stop_first: tuple[str, ...] = (),
        followers: tuple[str, ...] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        pause: Callable[[float], None] = time.sleep,
        restart_policy: RestartPolicy = RestartPolicy(),
        spawn: Spawn = _spawn_child,
    ) -> None:
        self.procs: dict[str, ChildHandle] = {}
        self.codes: dict[str, int] = {}
        #: how often each child was started again after it died
        self.restarts: dict[str, int] = {}
        self.restart_policy = restart_policy
        self._restartable: dict[str, _Restartable] = {}
        #: the wait_all tick when no child is running to wait on (all in backoff)
        self.pause = pause
        self.spawn = spawn
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

    def start(
        self, name: str, argv: list[str], output: IO[bytes] | None = None, *, restart: bool = False
    ) -> ChildHandle:
        """Start one child; ``output`` (a file) takes its stdout and stderr, else it shares
        ours. ``restart``: start it again when it fails (see :class:`RestartPolicy`)."""
        child = self.spawn(name, argv, output)
        self.add(name, child)
        if restart:
            policy = self.restart_policy
            self._restartable[name] = _Restartable(argv, output, self.clock(), policy.backoff_s)
        return child

    def add(self, name: str, child: ChildHandle) -> None:
        """Take charge of a child already started (never restarted: we do not know how)."""
        self.procs[name] = child
        self.restarts.setdefault(name, 0)

    def _in_backoff(self) -> list[str]:
        return [n for n, r in self._restartable.items() if r.due_at is not None]

    def _restart_later(self, name: str, code: int) -> bool:
        """``name`` exited with ``code``: schedule its restart if the policy allows (True)."""
        spec = self._restartable.get(name)
        if spec is None or code == 0 or self._stop_at is not None or name in self._released:
            return False
        if code == 2:  # a usage or config error (a processor's failed setup): it would fail again
            log.error("%s exited with 2 (a configuration error): not restarted", name)
            return False
        if self.restart_policy.signals_only and code > 0:
            return False
        policy, now = self.restart_policy, self.clock()
        while spec.restarted_at and now - spec.restarted_at[0] >= policy.window_s:
            spec.restarted_at.popleft()
        if len(spec.restarted_at) >= policy.max_restarts:
            log.error(
                "%s exited with %s: not restarted, %d restarts %s already",
                name,
                describe_exit(code),
                len(spec.restarted_at),
                policy.window_text(),
            )
            return False
        if now - spec.started_at >= policy.stable_s:
            spec.delay_s = policy.backoff_s  # it had stopped crashing: start over
        spec.restarted_at.append(now)
        spec.due_at = now + spec.delay_s
        log.warning(
            "%s exited with %s: restarting in %g s (restart %d of at most %d %s)",
            name,
            describe_exit(code),
            spec.delay_s,
            len(spec.restarted_at),
            policy.max_restarts,
            policy.window_text(),
        )
        spec.delay_s = min(2 * spec.delay_s, policy.max_backoff_s)
        return True

    def _restart_due(self, stop_on_failure: bool) -> None:
        """Start the children whose backoff is over; a stop cancels every pending restart."""
        now = self.clock()
        for name in self._in_backoff():
            spec = self._restartable[name]
            if self._stop_at is not None:
                # it would be stopped at once: its death was handled, nothing failed since
                log.info("%s: not restarted, stopping", name)
                spec.due_at = None
                self.codes[name] = 0
                continue
            if spec.due_at is None or now < spec.due_at:
                continue
            spec.due_at = None
            self.restarts[name] += 1  # before the start: the new incarnation reports its count
            try:
                child = self.spawn(name, spec.argv, spec.output)
            except OSError as e:
                log.error("%s could not be restarted: %s", name, e)
                self._fail(name, 1, stop_on_failure)
                continue
            self.procs[name] = child
            spec.started_at = now

    def _fail(self, name: str, code: int, stop_on_failure: bool) -> None:
        self.codes[name] = code
        if code != 0 and stop_on_failure and self._stop_at is None:
            log.error("%s exited with %s: stopping the others", name, describe_exit(code))
            self.request_stop(drain=False)

    def _tick(self) -> None:
        """Wait up to TICK_S for a running child (or until the next restart is due)."""
        step = TICK_S
        due = [r.due_at for r in self._restartable.values() if r.due_at is not None]
        if due:
            step = min(step, max(0.0, min(due) - self.clock()))
        backoff = self._in_backoff()
        live = [p for n, p in self.procs.items() if n not in self.codes and n not in backoff]
        if live:
            live[0].wait_briefly(step)  # a bounded wait on a child, not a sleep
        elif step > 0:
            self.pause(step)  # every child is in backoff: nothing to wait on

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
        if others and not self.running(others) and not any(n in others for n in self._in_backoff()):
            self._followers_stopped = True
            late = self.running(self.followers)
            if late:
                log.info("run over: stopping %s", ", ".join(late))
                self._released.update(late)
                self.signal_all(signal.SIGTERM, late)

    def wait_all(self, *, stop_on_failure: bool = True, on_tick: Callable[[], None] | None = None) -> int:
        """Wait for every child, restarting those that may be; forward SIGINT/SIGTERM;
        return the worst exit status (:func:`exit_status`: never a raw signal number).

        ``on_tick`` is called about ten times a second meanwhile (the dashboard).
        """

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("%s: stopping all components", signal.Signals(signum).name)
            self.request_stop()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while len(self.codes) < len(self.procs):
                backoff = self._in_backoff()
                for name, proc in self.procs.items():
                    if name in self.codes or name in backoff:
                        continue
                    code = proc.poll()
                    if code is None:
                        continue
                    if name in self._released and code == -signal.SIGTERM:
                        # it was still starting (no handler yet) when the run ended: nothing lost
                        code = 0
                    if not self._restart_later(name, code):
                        self._fail(name, code, stop_on_failure)
                self._restart_due(stop_on_failure)
                self._escalate()
                self._release_followers()
                if on_tick is not None:
                    on_tick()
                if len(self.codes) < len(self.procs):
                    self._tick()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return max((exit_status(c) for c in self.codes.values()), default=0)


def component_args(config_path: str | None, overrides: list[str]) -> list[str]:
    args: list[str] = []
    if config_path:
        args += ["--config", config_path]
    for item in overrides:
        args += ["--set", item]
    return args
