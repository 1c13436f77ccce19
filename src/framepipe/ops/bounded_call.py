"""A call into code that may hang or crash (HDF5 on a damaged file), run in a child process
with a bounded time.

HDF5 can spin for minutes inside a C call on a damaged file (an SWMR open retries its
metadata reads hundreds of times) or abort the process; neither can be interrupted from
Python. So the call runs in a fresh ``spawn`` child: the target reports progress as it
goes, and the parent kills the child once ``idle_timeout_s`` pass without a word from it.
The answer comes back as JSON over a pipe, never as a pickle.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from framepipe.core.errors import FramepipeError
from framepipe.runtime.processes import die_with_parent

#: how long a fresh child may take to import what it needs before the idle timeout starts
START_TIMEOUT_S = 60.0
#: a target that keeps working says so at most this often
PROGRESS_EVERY_S = 0.5
#: after SIGKILL, how long to wait to reap the child
REAP_S = 5.0


class CallTimedOut(FramepipeError):
    """The child said nothing for the idle timeout: it was killed. ``where``: its last
    :meth:`Progress.at`, if any."""

    def __init__(self, message: str, where: dict[str, Any] | None):
        self.where = where
        super().__init__(message)


class CallDied(FramepipeError):
    """The child ended without an answer (a crash inside a C library, or killed).
    ``where``: its last :meth:`Progress.at`: what it was doing when it died."""

    def __init__(self, message: str, where: dict[str, Any] | None, exitcode: int | None):
        self.where = where
        self.exitcode = exitcode
        super().__init__(message)


class CallFailed(FramepipeError):
    """The target raised: the child's exception, as one line."""


class Progress:
    """What the target is given to tell the parent how far it got (``Progress(None)``: to
    nobody, for a call in this process)."""

    def __init__(self, conn: Connection | None):
        self._conn = conn
        self._last = time.monotonic()

    def __call__(self) -> None:
        """Still working (throttled: call it as often as you like)."""
        now = time.monotonic()
        if self._conn is not None and now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            _send(self._conn, {"progress": None})

    def at(self, where: dict[str, Any]) -> None:
        """About to do something that may crash or hang: the parent learns what, at once."""
        self._last = time.monotonic()
        if self._conn is not None:
            _send(self._conn, {"progress": where})


def _send(conn: Connection, message: dict[str, Any]) -> None:
    conn.send_bytes(json.dumps(message).encode())


def _child(parent: int, conn: Connection, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """The child's side: say we are running, call, send the answer or the error as one line."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle: it kills us
    _send(conn, {"progress": None})
    try:
        answer = json.dumps({"result": target(Progress(conn), *args)})
    except Exception as e:  # the parent prints it as one line: no traceback from here
        answer = json.dumps({"error": f"{type(e).__name__}: {' '.join(str(e).split())}"})
    conn.send_bytes(answer.encode())
    conn.close()


def call_bounded(target: Callable[..., Any], args: tuple[Any, ...], idle_timeout_s: float) -> Any:
    """``target(progress, *args)`` in a spawned child; its JSON-able return value.

    ``target`` must be a module-level function (the child imports it) that takes a
    :class:`Progress` first. Raises :class:`CallTimedOut` after ``idle_timeout_s`` without
    progress, :class:`CallDied` if the child ends without an answer (both say where it
    was), :class:`CallFailed` if ``target`` raised. The child never outlives this call.
    """
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(os.getpid(), writer, target, args), daemon=True, name="bounded-call")
    proc.start()
    writer.close()  # ours closed: the child's end of the pipe alone keeps it open, so its death is EOF
    where: dict[str, Any] | None = None
    try:
        wait = START_TIMEOUT_S
        while True:
            if not reader.poll(wait):
                raise CallTimedOut(f"no answer within {idle_timeout_s:g} s", where)
            try:
                message = json.loads(reader.recv_bytes())
            except EOFError:
                proc.join(REAP_S)
                raise CallDied(_death(proc.exitcode), where, proc.exitcode) from None
            wait = idle_timeout_s
            if "result" in message:
                return message["result"]
            if "error" in message:
                raise CallFailed(message["error"])
            where = message["progress"] or where
    finally:
        reader.close()
        if proc.is_alive():
            proc.kill()
        proc.join(REAP_S)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"ended by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"ended by signal {-exitcode}"
    return f"ended with exit code {exitcode}"
