"""``framepipe run``: the whole pipeline on this machine, one OS process per component.

Children are started as ``python -m framepipe <component>`` with the same config file and
overrides, so what runs here is exactly what an operator starts by hand on each machine.
Children die with the launcher (PR_SET_PDEATHSIG), SIGINT/SIGTERM are forwarded, and a
child that fails stops the rest. The run exits 0 only when every frame is accounted for.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from framepipe.config import Config, run_id_now
from framepipe.runtime.processes import ChildSet, component_args, framepipe_argv

log = logging.getLogger("framepipe.run")


def run_pipeline(
    config: Config, config_path: str | None, overrides: list[str], log_args: list[str], *, tui: bool = True
) -> int:
    """Start every component locally, wait, print the summary; 0 only if nothing is missing.

    Meanwhile a live dashboard (``tui`` and a terminal) or a progress log line every few seconds.
    """
    from framepipe.ops.dashboard import RunMonitor

    Path(config.run.data_dir).mkdir(parents=True, exist_ok=True)
    if not config.run.id:
        # one id for every component: both recorders name their files after the same run
        config = config.model_copy(update={"run": config.run.model_copy(update={"id": run_id_now()})})
        overrides = [*overrides, f"run.id={config.run.id}"]
    common = component_args(config_path, overrides) + log_args
    with tempfile.TemporaryDirectory(prefix="framepipe-run-") as tmp:
        source = "publisher" if config.ventilator.source == "publisher" else "ventilator"
        children = ChildSet(stop_first=(source,), followers=tuple(f"worker-{i}" for i in range(config.workers.count)))
        monitor = RunMonitor(
            tmp,
            title=f"framepipe run '{config.run.name}'",
            total=config.camera.count,
            log_path=Path(config.run.data_dir, f"{config.run.name}.log"),
            tui=tui,
        )

        def start(name: str, *argv: str) -> None:
            summary = os.path.join(tmp, f"{name}.json")
            children.start(name, framepipe_argv(*argv, *common, "--summary-json", summary), monitor.child_output)

        t0 = time.monotonic()
        with monitor:
            start("sink", "sink")
            for i in range(config.workers.count):
                start(f"worker-{i}", "worker", "--index", str(i))
            for rec in config.recorders:
                start(rec.name, "record", "--name", rec.name)
            start("ventilator", "ventilator")
            if config.ventilator.source == "publisher" or any(r.stream == "frames" for r in config.recorders):
                start("publisher", "publisher")
            code = children.wait_all(on_tick=monitor.tick)
        elapsed = time.monotonic() - t0
        summaries = {}
        for name in children.procs:
            try:
                summaries[name] = json.loads(Path(tmp, f"{name}.json").read_text())
            except (OSError, ValueError):
                summaries[name] = {}
    ok = print_summary(config, summaries, children.codes, elapsed)
    if code == 0 and not ok:
        code = 1
    return code


def _rate(s: dict[str, Any], key: str) -> str:
    n, first, last = s.get(key, 0), s.get("first_ns"), s.get("last_ns")
    if not n or not first or not last or last <= first:
        return "-"
    return f"{(n - 1) / ((last - first) / 1e9):.1f}"


def print_summary(config: Config, s: dict[str, dict[str, Any]], codes: dict[str, int], elapsed: float) -> bool:
    """The end-of-run table; returns True when every frame is accounted for."""
    pub, vent, sink = s.get("publisher", {}), s.get("ventilator", {}), s.get("sink", {})
    workers = [v for k, v in s.items() if k.startswith("worker-")]
    rows: list[tuple[str, Any, str, str]] = [
        ("acquired", pub.get("acquired", vent.get("accepted", 0)), _rate(pub, "acquired"), "camera"),
        ("published", pub.get("published", "-"), _rate(pub, "published"), f"blocked {pub.get('blocked_ms', 0)} ms"),
        (
            "dispatched",
            vent.get("accepted", 0),
            _rate(vent, "acknowledged"),
            f"re-dispatched {vent.get('redispatched', 0)}, source gaps {vent.get('source_gaps', 0)}",
        ),
        (
            "processed",
            sink.get("received", 0),
            _rate(sink, "received"),
            f"{len(workers)} worker(s), duplicates dropped {sink.get('duplicates', 0)}",
        ),
    ]
    for rec in config.recorders:
        r = s.get(rec.name, {})
        rows.append(
            (
                f"recorded {rec.stream}",
                r.get("written", 0),
                _rate(r, "written"),
                f"missing {r.get('missing', '?')}, gaps {r.get('gaps', '?')}",
            )
        )
    missing = sink.get("missing")
    rows.append(("missing", missing if missing is not None else "?", "", f"latency {sink.get('latency_ms', {})}"))
    print(f"\nframepipe run '{config.run.name}': {elapsed:.1f} s, data in {config.run.data_dir}/")
    for rec in config.recorders:
        path = s.get(rec.name, {}).get("path")
        if path:
            print(f"  {rec.stream + ' file':<18}{path}")
    print(f"  {'stage':<18}{'frames':>8}{'frames/s':>10}  notes")
    for stage, n, rate, note in rows:
        print(f"  {stage:<18}{n!s:>8}{rate:>10}  {note}")
    failed = {n: c for n, c in codes.items() if c != 0}
    acquired = rows[0][1]
    ok = (
        not failed
        and missing == 0
        and sink.get("received") == acquired
        and all(
            s.get(r.name, {}).get("missing") == 0 and s.get(r.name, {}).get("written") == acquired
            for r in config.recorders
        )
    )
    if failed:
        print("  exit codes: " + ", ".join(f"{n}={c}" for n, c in failed.items()))
    print("  every frame accounted for" if ok else "  NOT every frame accounted for")
    return ok
