"""`framepipe run` as an operator sees it: the live dashboard on a terminal, log lines elsewhere.

The terminal is a real pseudo-terminal (the kernel's pty), so rich sees a tty exactly as it
does in an operator's shell.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from framepipe.testing.deployment import PORT_KEYS, Deployment, child_env, free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N = 60
RUN = ["run", "--set", f"camera.count={N}", "--set", "camera.fps=20", "--set", "camera.width=64"]
RUN += ["--set", "camera.height=48"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def port_env() -> dict[str, str]:
    ports = iter(free_ports(sum(len(v) for v in PORT_KEYS.values())))
    return {f"FRAMEPIPE_{s.upper()}__{k.upper()}": str(next(ports)) for s, keys in PORT_KEYS.items() for k in keys}


def framepipe(tmp_path: Path) -> list[str]:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    return [sys.executable, "-m", "framepipe"]


def run_in_terminal(argv: list[str], cwd: Path, timeout: float = 120.0, columns: int = 160) -> tuple[int, str]:
    """Run with stdout and stderr on a 50×``columns`` pseudo-terminal; return (exit code, what it drew)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = child_env({**port_env(), "TERM": "xterm-256color"})
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)  # bounded wait for output
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal has closed it
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                try:
                    proc.wait(timeout=0.2)  # closed the terminal: it is exiting
                except subprocess.TimeoutExpired:
                    continue
            if proc.poll() is not None:
                break
        else:
            raise AssertionError("framepipe run did not finish:\n" + b"".join(chunks).decode(errors="replace")[-3000:])
        return proc.wait(timeout=10), ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)


@pytest.mark.timeout(180)
def test_run_on_a_terminal_shows_the_live_dashboard(tmp_path: Path) -> None:
    code, screen = run_in_terminal([*framepipe(tmp_path), *RUN], tmp_path)
    assert code == 0, screen[-3000:]
    assert "framepipe run 'local'" in screen
    for header in ("stage", "frames/s", "MB/s", "queue / in flight", "drops", "rejects"):
        assert header in screen, header
    for name in ("publisher", "ventilator", "2 started", "sink", "recorder-frames", "recorder-results"):
        assert name in screen, name
    assert re.search(r"\d+\.\d [kM]B data/local_\w+_frames\.h5", screen), "the file being written and its size"
    assert "in flight " in screen
    # live: drawn while frames were still coming, then the finished run
    done = [int(m) for m in re.findall(rf"(\d+)/{N} frames", screen)]
    assert any(d < N for d in done) and done[-1] == N, done
    assert "ETA " in screen and "100%" in screen
    assert "every frame accounted for" in screen
    # the components' log lines went to the run's log file, not over the dashboard
    assert " INFO " not in screen
    assert "logs of every component: data/local.log" in screen
    log = (tmp_path / "data" / "local.log").read_text()
    for name in ("sink", "worker-", "recorder-frames", "recorder-results", "ventilator", "publisher"):
        assert re.search(rf"^\S+ {name}\S*\s+INFO\s+ready: ", log, re.M), f"{name} logged no ready line"


@pytest.mark.timeout(180)
def test_the_dashboard_fits_100_columns_without_cutting_words(tmp_path: Path) -> None:
    code, screen = run_in_terminal([*framepipe(tmp_path), *RUN], tmp_path, columns=100)
    assert code == 0, screen[-3000:]
    assert "…" not in screen, "a word cut short"
    for name in ("publisher", "ventilator", "2 started, 2 alive", "recorder-frames", "recorder-results"):
        assert name in screen, name
    assert re.search(r"worker-\S+-[01]\b", screen), "worker names whole"
    assert re.search(r"local_\w+_0001_local_frames\.h5", screen), "the file's name whole"
    assert not re.search(r"_\d{4}_local_\w*\s*$", screen, re.M), "a file name folded over two lines"
    assert not re.search(r"^(publisher|ventilator|sink)\s+\1\b", screen, re.M), "a stage column repeating the name"


@pytest.mark.timeout(180)
def test_run_without_a_terminal_logs_plain_progress_lines(tmp_path: Path) -> None:
    argv = [*framepipe(tmp_path), *RUN, "--no-tui"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=150, env=child_env(port_env()), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    progress = [line for line in proc.stderr.splitlines() if " progress: " in line]
    assert progress, proc.stderr[-3000:]
    assert f"progress: {N}/{N} frames (100%)" in progress[-1]
    for part in ("publisher 60 @", "MB/s", "[in flight 0/16, queued 0]", "workers 60", "recorder-results 60"):
        assert part in progress[-1], part
    assert "every frame accounted for" in proc.stdout
    assert "\x1b[" not in proc.stdout + proc.stderr, "no terminal control codes in logs"
    assert not (tmp_path / "data" / "local.log").exists(), "logs stay on stderr when there is no dashboard"


@pytest.mark.timeout(180)
def test_status_watch_on_a_terminal_shows_the_same_dashboard(deployment: Deployment) -> None:
    status_ports = free_ports(3)
    deployment.settings.update(
        {
            "camera.count": 0,
            "camera.fps": 20.0,
            "camera.width": 64,
            "camera.height": 48,
            "publisher.subscribers": ["ventilator"],
            "sink.subscribers": [],
            "publisher.status_port": status_ports[0],
            "ventilator.status_port": status_ports[1],
            "sink.status_port": status_ports[2],
        }
    )
    deployment.write_config()
    # binders before who connects to them (see test_viewer.py: TCP self-connect)
    deployment.start("sink", "sink").wait_for("ready:")
    publisher = deployment.start("publisher", "publisher")
    publisher.wait_for("ready:")
    deployment.start("ventilator", "ventilator").wait_for("ready:")
    deployment.start("worker", "worker")
    publisher.wait_for("all subscribers here: publishing", timeout=60)

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(
        deployment.argv("status", "--watch", "--interval", "0.5"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=deployment.dir,
        env=child_env({"TERM": "xterm-256color"}),
    )
    os.close(slave)
    screen = ""
    try:
        deadline = time.monotonic() + 60
        # until a redraw shows the publisher's rate (a second round: rates need two snapshots)
        while time.monotonic() < deadline and not re.search(r"^publisher\s+\d+\s+\d+\.\d", screen, re.M):
            ready, _, _ = select.select([master], [], [], 0.5)  # bounded wait for output
            if ready:
                screen += ANSI.sub("", os.read(master, 65536).decode(errors="replace"))
            assert proc.poll() is None, screen[-3000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        os.close(master)
    # publisher, ventilator, sink, and the worker the sink hears from
    assert "framepipe status 'run'  (4 component(s))" in screen, screen[-3000:]
    for header in ("frames/s", "MB/s", "queue / in flight", "drops", "rejects"):
        assert header in screen
    # one column names the component (the flow order says its stage)
    assert re.search(r"^publisher\s+\d+\s+\d+\.\d", screen, re.M), screen[-3000:]
    assert re.search(r"^ventilator\s+\d+", screen, re.M) and "in flight " in screen
    assert re.search(r"^workers\s+(\d+)\s.*1 started, 1 alive", screen, re.M), "the worker's frames, from the sink"
