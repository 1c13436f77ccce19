"""A call in a child process with a bounded time: the answer, or one exception that says
where the child was when it hung or died; the child never outlives the call."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from framepipe.ops.bounded_call import CallDied, CallFailed, CallTimedOut, Progress, call_bounded


def answer(progress: Progress, n: int) -> dict[str, int]:
    for k in range(n):
        progress.at({"step": k})
    return {"squares": sum(k * k for k in range(n))}


def hang(progress: Progress, pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    progress.at({"what": "stuck here"})
    threading.Event().wait()  # a C call that never returns, as HDF5 on a damaged file


def crash(progress: Progress) -> None:
    progress.at({"what": "chunk 7"})
    os.kill(os.getpid(), signal.SIGSEGV)


def fail(progress: Progress) -> None:
    raise ValueError("bad\nvalue")


def test_the_answer_comes_back_as_json() -> None:
    assert call_bounded(answer, (4,), idle_timeout_s=30) == {"squares": 14}


def test_a_hung_child_is_killed_after_the_idle_timeout(tmp_path: Path) -> None:
    pid_file = str(tmp_path / "pid")
    started = time.monotonic()
    with pytest.raises(CallTimedOut) as err:
        call_bounded(hang, (pid_file,), idle_timeout_s=1)
    assert time.monotonic() - started < 30
    assert err.value.where == {"what": "stuck here"}
    pid = int(Path(pid_file).read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: gone, not a zombie


def test_a_crash_says_where_the_child_was() -> None:
    with pytest.raises(CallDied) as err:
        call_bounded(crash, (), idle_timeout_s=30)
    assert err.value.exitcode == -signal.SIGSEGV and "SIGSEGV" in str(err.value)
    assert err.value.where == {"what": "chunk 7"}


def test_an_exception_is_one_line() -> None:
    with pytest.raises(CallFailed, match=r"^ValueError: bad value$"):
        call_bounded(fail, (), idle_timeout_s=30)
