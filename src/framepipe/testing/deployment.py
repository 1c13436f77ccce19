"""Real framepipe components as subprocesses on loopback, with free ports and cleanup.

A :class:`Deployment` writes a config with free ports into a temp dir, starts components
with the real CLI (``python -m framepipe ...``), waits on their ``ready:`` log lines (never
on sleep), and kills whatever is left in ``close()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from framepipe.config import dump_toml
from framepipe.testing.ports import free_ports

T = TypeVar("T")

SRC = str(Path(__file__).resolve().parents[2])  # the src/ directory this framepipe came from

PORT_KEYS = {
    "publisher": ("frames_port", "sync_port", "preview_port"),
    "ventilator": ("tasks_port",),
    "sink": ("results_in_port", "results_port", "control_port", "sync_port", "preview_port"),
}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


class Proc:
    """One component process; its stderr goes to a log file we can wait on."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Block until ``text`` appears in the log; fail with the log if it does not."""

        def seen() -> str | None:
            out = self.log()
            return out if text in out else None

        return self.wait_until(seen, repr(text), timeout)

    def wait_until(self, check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
        """Block until ``check()`` returns something (not None) while this process runs;
        fail with the log if the process exits first or the timeout passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got is not None:
                return got
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before {what}:\n{self.log()}")
            try:
                self.popen.wait(timeout=0.05)  # bounded wait on the process, not a sleep
            except subprocess.TimeoutExpired:
                pass
        raise AssertionError(f"{self.name}: {what} not seen within {timeout} s:\n{self.log()}")

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s:\n{self.log()[-4000:]}") from None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._log.close()


class Deployment:
    """A local deployment for one test: config file with free ports, processes, cleanup."""

    def __init__(self, tmp_path: Path, settings: dict[str, Any] | None = None):
        self.dir = tmp_path
        self.data = tmp_path / "data"
        self.procs: list[Proc] = []
        ports = iter(free_ports(sum(len(v) for v in PORT_KEYS.values())))
        self.settings: dict[str, Any] = {"run.data_dir": str(self.data), "run.finish_timeout_s": 30}
        for section, keys in PORT_KEYS.items():
            for key in keys:
                self.settings[f"{section}.{key}"] = next(ports)
        self.settings.update(settings or {})
        self.config_path = tmp_path / "deployment.toml"
        self.write_config()

    def write_config(self) -> None:
        """The settings as a TOML file (sections from dotted keys)."""
        sections: dict[str, dict[str, Any]] = {}
        for dotted, value in self.settings.items():
            section, _, key = dotted.partition(".")
            sections.setdefault(section, {})[key] = value
        self.config_path.write_text(dump_toml(sections))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "framepipe", *args, "--config", str(self.config_path)]

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, self.argv(*args), self.dir / f"{name}.log", child_env(env), self.dir)
        self.procs.append(proc)
        return proc

    def start_pipeline(
        self,
        *,
        workers: int = 1,
        recorders: tuple[str, ...] = ("recorder-frames", "recorder-results"),
        publisher: bool = True,
    ) -> list[Proc]:
        """The whole pipeline from the current config: sink first (binders before the
        components that connect to them), then workers, recorders, ventilator, publisher."""
        sink = self.start("sink", "sink")
        sink.wait_for("ready:")
        procs = [sink]
        procs += [self.start(f"worker-{i}", "worker", "--index", str(i)) for i in range(workers)]
        procs += [self.start(name, "record", "--name", name) for name in recorders]
        procs.append(self.start("ventilator", "ventilator"))
        if publisher:
            procs.append(self.start("publisher", "publisher"))
        return procs

    def run_cli(
        self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, env=child_env(env), cwd=self.dir
        )

    def close(self) -> None:
        for proc in self.procs:
            proc.signal(signal.SIGKILL)
        for proc in self.procs:
            proc.kill()
