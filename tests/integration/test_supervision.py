"""Restarts with real processes: a :class:`ChildSet` child that kills itself once, and a
``framepipe worker -n 2`` pool whose worker is SIGKILLed."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from framepipe.runtime.processes import ChildSet
from framepipe.testing.deployment import Deployment, Proc

# chaos, SIGSTOP, restarts and fuzz through shared memory (the same-host default) and TCP
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_memory")]

#: kills itself the first time (leaving a marker), exits 0 the next
DIES_ONCE = """
import os, signal, sys
marker = sys.argv[1]
if not os.path.exists(marker):
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_child_that_kills_itself_is_restarted_once_and_its_clean_exit_ends_the_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    children = ChildSet()
    with open(tmp_path / "child.log", "wb") as out:
        children.start("crasher", [sys.executable, "-c", DIES_ONCE, str(tmp_path / "marker")], out, restart=True)
        with caplog.at_level(logging.INFO, logger="framepipe.run"):
            code = children.wait_all()

    assert code == 0
    assert children.restarts == {"crasher": 1}
    assert children.codes == {"crasher": 0}, "the code of its last incarnation"
    assert "crasher exited with code -9 (SIGKILL): restarting in 0.5 s" in caplog.text


def _worker_pid(pool: Proc, index: int) -> int:
    """The pid of the pool's child ``worker --index <index>`` (its children, from /proc)."""
    children = Path(f"/proc/{pool.pid}/task/{pool.pid}/children").read_text().split()
    for pid in children:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--index" in argv and argv[argv.index(b"--index") + 1] == str(index).encode():
            return int(pid)
    raise AssertionError(f"no worker --index {index} among the pool's children {children}:\n{pool.log()}")


def test_a_worker_pool_replaces_a_killed_worker_and_a_signal_ends_it_with_exit_0(tmp_path: Path) -> None:
    dep = Deployment(tmp_path)
    try:
        pool = dep.start("pool", "worker", "-n", "2")

        def ready(count: int) -> bool | None:
            return True if pool.log().count("ready:") >= count else None

        pool.wait_until(lambda: ready(2), "two workers ready")
        os.kill(_worker_pid(pool, 0), signal.SIGKILL)
        pool.wait_for("worker-0 exited with code -9 (SIGKILL): restarting in 0.5 s")
        pool.wait_until(lambda: ready(3), "the replacement worker ready")

        pool.signal(signal.SIGINT)
        code = pool.wait(timeout=20)
    finally:
        dep.close()

    assert code == 0, pool.log()
    assert "stopping the others" not in pool.log()
