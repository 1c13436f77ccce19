"""Real component processes for the benchmark: started with the CLI, reaped with their rusage.

Every measured component runs as ``python -m framepipe <component> --config FILE``,
exactly what an operator starts, with its own ``--summary-json``. The benchmark reaps
each child itself with ``os.wait4``, which hands back that process's own CPU time. Peak
RSS is ``VmHWM`` from ``/proc/<pid>/status`` (per program image, so the fork of this
large benchmark process before exec is not counted, as it is in ``ru_maxrss``), sampled
every 0.1 s with ``VmRSS`` and CPU time so a run can show whether memory grows with its
length and what each component costs per frame once started. Waiting is on pidfds with a
bounded timeout, never on sleep.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from framepipe.config import dump_toml
from framepipe.core.errors import FramepipeError
from framepipe.runtime.processes import Child, child_env, framepipe_argv
from framepipe.testing.deployment import PORT_KEYS
from framepipe.testing.ports import free_ports

#: how often a running child's VmRSS and CPU time are sampled, in seconds
RSS_SAMPLE_S = 0.1
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(FramepipeError):
    """A benchmark run that failed (a component exited non-zero or did not finish)."""


def write_config(path: Path, sections: dict[str, Any]) -> Path:
    """Write a deployment file (:func:`framepipe.config.dump_toml`)."""
    path.write_text(dump_toml(sections))
    return path


def local_ports() -> dict[str, dict[str, Any]]:
    """Config sections binding every stable component's ports to free loopback ports
    (every port key a test deployment sets, so nothing falls back to a default port)."""
    ports = iter(free_ports(sum(len(keys) for keys in PORT_KEYS.values())))
    return {section: {"host": "127.0.0.1", **{key: next(ports) for key in keys}} for section, keys in PORT_KEYS.items()}


class MeasuredChild(Child):
    """One process of a benchmark run (:class:`~framepipe.runtime.processes.Child`), reaped
    here with its rusage and sampled from /proc while it runs."""

    failure = BenchError

    def __init__(self, name: str, argv: list[str], log_path: Path, summary_path: Path | None, cwd: Path):
        super().__init__(name, argv, log_path, child_env(), cwd, stdin=subprocess.DEVNULL)
        self.summary_path = summary_path
        # waiting on a pidfd, then os.wait4 for the rusage: Popen's own wait would drop it
        self.pidfd = os.pidfd_open(self.pid)
        #: VmHWM, sampled: rusage's ru_maxrss would include the pre-exec fork of the benchmark
        self.peak_rss_kb = 0
        self.cpu_s = 0.0
        #: (time.time_ns(), VmRSS kB) samples
        self.rss_kb: list[tuple[int, int]] = []
        #: (time.time_ns(), CPU seconds so far) samples, to cost the steady state without start-up
        self.cpu: list[tuple[int, float]] = []

    def poll(self) -> int | None:
        """Reap it if it has exited, with its own CPU time from rusage."""
        if self.returncode is not None:
            return self.returncode
        pid, status, usage = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.popen.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        self.cpu_s = usage.ru_utime + usage.ru_stime
        os.close(self.pidfd)
        return self.popen.returncode

    def wait_briefly(self, timeout: float) -> int | None:
        if self.returncode is None:
            select.select([self.pidfd], [], [], timeout)
        return self.poll()

    def summary(self) -> dict[str, Any]:
        if self.summary_path is None:
            return {}
        try:
            return dict(json.loads(self.summary_path.read_text()))
        except (OSError, ValueError):
            return {}

    def sample(self, now: float) -> None:
        """Record CPU time, VmRSS and VmHWM (peak RSS of this program since its exec) from /proc."""
        try:
            with open(f"/proc/{self.popen.pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
            # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3
            t_ns = time.time_ns()
            self.cpu.append((t_ns, (int(fields[11]) + int(fields[12])) / _CLK_TCK))
            with open(f"/proc/{self.popen.pid}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if line.startswith(("VmRSS", "VmHWM")))
            self.rss_kb.append((t_ns, int(status["VmRSS"].split()[0])))
            self.peak_rss_kb = max(self.peak_rss_kb, int(status["VmHWM"].split()[0]))
        except (OSError, ValueError, IndexError, KeyError):
            pass  # it just exited

    def cpu_between(self, start_ns: int, end_ns: int) -> float | None:
        """CPU seconds spent between two wall-clock times (nearest samples inside), or None."""
        inside = [(t, c) for t, c in self.cpu if start_ns <= t <= end_ns]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 0.3e9:
            return None
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return (c1 - c0) * (end_ns - start_ns) / (t1 - t0)

    def memory(self, steady: tuple[int, int] | None = None) -> dict[str, Any]:
        """Peak RSS and CPU; with a steady window (wall ns), RSS early and late in it.

        ``rss_early_mb`` is the largest RSS in the first quarter of the window and
        ``rss_late_mb`` the largest in the last quarter: a component whose memory grows
        with the length of a run shows it as late ≫ early.
        """
        out: dict[str, Any] = {"peak_rss_mb": round(self.peak_rss_kb / 1024, 1), "cpu_s": round(self.cpu_s, 3)}
        if steady is not None:
            t0, t1 = steady
            q = (t1 - t0) / 4
            early = [kb for t, kb in self.rss_kb if t0 <= t <= t0 + q]
            late = [kb for t, kb in self.rss_kb if t1 - q <= t <= t1]
            if early and late:
                out["rss_early_mb"] = round(max(early) / 1024, 1)
                out["rss_late_mb"] = round(max(late) / 1024, 1)
        return out


class Fleet:
    """The processes of one benchmark run, started together and reaped with their rusage."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.children: list[MeasuredChild] = []

    def start(self, name: str, argv: list[str], *, summary: bool = True) -> MeasuredChild:
        """Start ``argv`` (a ``python -m ...`` command line); its output goes to ``<dir>/<name>.log``."""
        summary_path = self.dir / f"{name}.json" if summary else None
        if summary_path is not None:
            summary_path.unlink(missing_ok=True)
            argv = [*argv, "--summary-json", str(summary_path)]
        child = MeasuredChild(name, argv, self.dir / f"{name}.log", summary_path, self.dir)
        self.children.append(child)
        return child

    def framepipe(self, name: str, *args: str, config: Path) -> MeasuredChild:
        """A framepipe component through the real CLI."""
        return self.start(name, framepipe_argv(*args, "--config", str(config)))

    def running(self) -> list[MeasuredChild]:
        return [c for c in self.children if c.returncode is None]

    def wait(self, children: list[MeasuredChild] | None = None, timeout_s: float = 120.0) -> None:
        """Wait for ``children`` (default: all) to exit, sampling RSS.

        BenchError on timeout, or as soon as any child fails (the others would wait for it).
        """
        targets = children if children is not None else self.children
        deadline = time.monotonic() + timeout_s
        while True:
            pending = [c for c in targets if c.returncode is None]
            if not pending:
                return
            now = time.monotonic()
            if now > deadline:
                names = ", ".join(c.name for c in pending)
                raise BenchError(f"{names} still running after {timeout_s:g} s (logs in {self.dir})")
            for child in self.running():
                child.sample(now)
            select.select([c.pidfd for c in self.running()], [], [], RSS_SAMPLE_S)
            for child in self.running():
                child.poll()
            self.check()

    def check(self) -> None:
        """BenchError naming every child that failed, with the tail of its log."""
        failed = [c for c in self.children if c.returncode not in (0, None)]
        if failed:
            detail = "\n".join(f"--- {c.name} (exit {c.returncode}):\n{c.log()[-1500:]}" for c in failed)
            raise BenchError(f"{', '.join(c.name for c in failed)} failed:\n{detail}")

    def close(self) -> None:
        """Kill and reap whatever is still running. Safe twice."""
        for child in self.running():
            child.signal(signal.SIGKILL)
        for child in self.running():
            child.kill()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
