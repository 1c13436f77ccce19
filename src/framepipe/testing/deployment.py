"""Real framepipe components as subprocesses on loopback, with free ports and cleanup.

A :class:`Deployment` writes a config with free ports into a temp dir, starts components
with the real CLI (``python -m framepipe ...``), waits on their ``ready:`` log lines (never
on sleep), and kills whatever is left in ``close()``.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from framepipe.config import dump_toml
from framepipe.runtime.processes import Child, child_env, framepipe_argv
from framepipe.testing.ports import free_ports

__all__ = ["PORT_KEYS", "Deployment", "Proc", "child_env", "free_ports"]

PORT_KEYS = {
    "publisher": ("frames_port", "sync_port", "preview_port", "control_port"),
    "ventilator": ("tasks_port",),
    "sink": ("results_in_port", "results_port", "control_port", "sync_port", "preview_port"),
}


class Proc(Child):
    """One component process of a test (:class:`~framepipe.runtime.processes.Child`); its
    output goes to a log file we can wait on, and a wait that fails fails the test."""

    failure = AssertionError


class Deployment:
    """A local deployment for one test: config file with free ports, processes, cleanup."""

    def __init__(self, tmp_path: Path, settings: dict[str, Any] | None = None):
        self.dir = tmp_path
        self.data = tmp_path / "data"
        self.procs: list[Proc] = []
        ports = iter(free_ports(sum(len(v) for v in PORT_KEYS.values())))
        self.settings: dict[str, Any] = {
            "run.name": "run",
            "run.data_dir": str(self.data),
            "run.finish_timeout_s": 30,
            # file names without a run id, so a test knows them (data/run_frames.h5)
            "recorders": [
                {"name": f"recorder-{stream}", "stream": stream, "path": "{data_dir}/{run}_{stream}.h5"}
                for stream in ("frames", "results")
            ],
        }
        for section, keys in PORT_KEYS.items():
            for key in keys:
                self.settings[f"{section}.{key}"] = next(ports)
        self.settings.update(settings or {})
        self.config_path = tmp_path / "deployment.toml"
        self.write_config()

    def write_config(self) -> None:
        """The settings as a TOML file (sections from dotted keys; a key without a dot, such
        as ``recorders``, as it is)."""
        sections: dict[str, Any] = {}
        for dotted, value in self.settings.items():
            section, _, key = dotted.partition(".")
            if key:
                sections.setdefault(section, {})[key] = value
            else:
                sections[section] = value
        self.config_path.write_text(dump_toml(sections))

    def argv(self, *args: str) -> list[str]:
        return framepipe_argv(*args, "--config", str(self.config_path))

    def start(self, name: str, *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> Proc:
        """Start a component; ``prefix`` goes before its command line (e.g. a command that
        runs it in a mount namespace of its own, and execs it)."""
        proc = Proc(name, [*prefix, *self.argv(*args)], self.dir / f"{name}.log", child_env(env), self.dir)
        self.procs.append(proc)
        return proc

    def start_pipeline(
        self,
        *,
        workers: int = 1,
        recorders: tuple[str, ...] = ("recorder-frames", "recorder-results"),
        publisher: bool = True,
        sink_summary: Path | None = None,
    ) -> list[Proc]:
        """The whole pipeline from the current config: sink first (binders before the
        components that connect to them), then workers, recorders, ventilator, publisher."""
        sink = self.start("sink", "sink", *(["--summary-json", str(sink_summary)] if sink_summary else []))
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
