"""``framepipe run``: the whole pipeline on this machine, one OS process per component.

Children are started as ``python -m framepipe <component>`` with the same config file and
overrides, so what runs here is exactly what an operator starts by hand on each machine.
Children die with the launcher (PR_SET_PDEATHSIG) and SIGINT/SIGTERM are forwarded.

The launcher is a supervisor: a component that dies is started again (backoff, at most a
few restarts a minute: :class:`framepipe.runtime.processes.RestartPolicy`), logged and
counted (each restarted child reports its count, ``FRAMEPIPE_RESTARTS``, in its status).
A worker killed mid-acquisition is replaced and its frames re-dispatched; a recorder or
sink that restarts rejoins in a part file, its ledger listing what it missed. One
exception: in a one-acquisition run the publisher is not restarted (a new publisher would
start the acquisition again); its failure ends the run.

``framepipe run`` runs one acquisition and exits 0 only when every frame is accounted for;
``framepipe run --serve`` keeps the deployment up for ``framepipe acquire`` until Ctrl-C or
``framepipe shutdown``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from framepipe.config import Config, run_id_now
from framepipe.core.counters import Count
from framepipe.runtime.processes import (
    Child,
    ChildHandle,
    ChildSet,
    RestartPolicy,
    child_env,
    component_args,
    framepipe_argv,
)
from framepipe.runtime.status import ComponentStatus, Role

log = logging.getLogger("framepipe.run")


def run_pipeline(
    config: Config,
    config_path: str | None,
    overrides: list[str],
    log_args: list[str],
    *,
    tui: bool = True,
    serve: bool = False,
) -> int:
    """Start every component locally, supervise them, print the summary; 0 only if nothing
    is missing (``serve``: a standing deployment, 0 when it shut down cleanly).

    Meanwhile a live dashboard (``tui`` and a terminal) or a progress log line every few seconds.
    """
    from framepipe.ops.dashboard import RunMonitor, read_summary

    Path(config.run.data_dir).mkdir(parents=True, exist_ok=True)
    serve = serve or config.run.serve
    if not config.run.id and not serve:
        # one id for every component: both recorders name their files after the same run.
        # (Standing: the publisher's start messages carry its id to every file, and a
        # restarted publisher gets a new one, so its acquisition ids never name a file twice.)
        config = config.model_copy(update={"run": config.run.model_copy(update={"id": run_id_now()})})
        overrides = [*overrides, f"run.id={config.run.id}"]
    if serve:
        serve = True
        config = config.model_copy(update={"run": config.run.model_copy(update={"serve": True})})
        overrides = [*overrides, "run.serve=true"]
    common = component_args(config_path, overrides) + log_args
    with tempfile.TemporaryDirectory(prefix="framepipe-run-") as tmp:
        source = "publisher" if config.ventilator.source == "publisher" else "ventilator"

        def spawn(name: str, argv: list[str], output: Any) -> ChildHandle:
            # a restarted child says how often it was restarted, in its status
            return Child(name, argv, output, env=child_env({"FRAMEPIPE_RESTARTS": str(children.restarts.get(name, 0))}))

        children = ChildSet(
            stop_first=(source,),
            followers=tuple(f"worker-{i}" for i in range(config.workers.count)),
            spawn=spawn,
            # one acquisition: replace what crashed; an exit with a code is that component's verdict
            restart_policy=RestartPolicy(signals_only=not serve),
        )
        monitor = RunMonitor(
            tmp,
            title=f"framepipe run '{config.run.name}'" + (" (serving)" if serve else ""),
            total=None if serve else config.camera.count,
            log_path=Path(config.run.data_dir, f"{config.run.name}.log"),
            tui=tui,
        )

        def start(name: str, *argv: str) -> None:
            summary = os.path.join(tmp, f"{name}.json")
            # one acquisition: a new publisher would start it again, so its failure ends the run
            restart = serve or name != "publisher"
            children.start(
                name, framepipe_argv(*argv, *common, "--summary-json", summary), monitor.child_output, restart=restart
            )

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
        summaries = {name: read_summary(Path(tmp, f"{name}.json")) for name in children.procs}
    restarted = {n: c for n, c in children.restarts.items() if c}
    if serve:
        pub = summaries.get("publisher")
        done = pub.counters.get(Count.ACQUISITIONS, 0) if pub is not None else "?"
        print(f"\nframepipe run --serve '{config.run.name}': up {elapsed:.1f} s, {done} acquisition(s)")
        if restarted:
            print("  restarts: " + ", ".join(f"{n}={c}" for n, c in restarted.items()))
        return code
    ok = print_summary(config, summaries, children.codes, elapsed)
    if restarted:
        print("  restarts: " + ", ".join(f"{n}={c}" for n, c in restarted.items()))
    if code == 0 and not ok:
        code = 1
    return code


def _rate(s: ComponentStatus, key: str) -> str:
    rate = s.lifetime_rate(key)
    return "-" if rate is None else f"{rate:.1f}"


def print_summary(
    config: Config, summaries: Mapping[str, ComponentStatus | None], codes: dict[str, int], elapsed: float
) -> bool:
    """The end-of-run table; returns True when every frame is accounted for.

    ``summaries``: each child's last summary file, None when it wrote none.
    """
    nothing = ComponentStatus(name="?", role="?")

    def of(name: str) -> ComponentStatus:
        return summaries.get(name) or nothing

    pub, vent, sink = of(Role.PUBLISHER), of(Role.VENTILATOR), of(Role.SINK)
    pub_c, vent_c, sink_c = pub.counters, vent.counters, sink.counters
    workers = [name for name in summaries if name.startswith("worker-")]
    rows: list[tuple[str, Any, str, str]] = [
        ("acquired", pub_c.get(Count.ACQUIRED, vent_c.get(Count.ACCEPTED, 0)), _rate(pub, Count.ACQUIRED), "camera"),
        (
            "published",
            pub_c.get(Count.PUBLISHED, "-"),
            _rate(pub, Count.PUBLISHED),
            f"blocked {pub_c.get(Count.BLOCKED_MS, 0)} ms",
        ),
        (
            "dispatched",
            vent_c.get(Count.ACCEPTED, 0),
            _rate(vent, Count.ACKNOWLEDGED),
            f"re-dispatched {vent_c.get(Count.REDISPATCHED, 0)}, source gaps {vent_c.get(Count.SOURCE_GAPS, 0)}",
        ),
        (
            "processed",
            sink_c.get(Count.RECEIVED, 0),
            _rate(sink, Count.RECEIVED),
            f"{len(workers)} worker(s), duplicates dropped {sink_c.get(Count.DUPLICATES, 0)}",
        ),
    ]
    for rec in config.recorders:
        r = of(rec.name)
        rows.append(
            (
                f"recorded {rec.stream}",
                r.counters.get(Count.WRITTEN, 0),
                _rate(r, Count.WRITTEN),
                f"missing {r.counters.get(Count.MISSING, '?')}, gaps {r.counters.get(Count.GAPS, '?')}",
            )
        )
    missing = sink_c.get(Count.MISSING)
    rows.append(("missing", missing if missing is not None else "?", "", f"latency {sink_c.get(Count.LATENCY_MS, {})}"))
    print(f"\nframepipe run '{config.run.name}': {elapsed:.1f} s, data in {config.run.data_dir}/")
    for rec in config.recorders:
        path = of(rec.name).counters.get(Count.PATH)
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
        and sink_c.get(Count.RECEIVED) == acquired
        and all(
            of(r.name).counters.get(Count.MISSING) == 0 and of(r.name).counters.get(Count.WRITTEN) == acquired
            for r in config.recorders
        )
    )
    if failed:
        print("  exit codes: " + ", ".join(f"{n}={c}" for n, c in failed.items()))
    if sink_c.get(Count.FAILED):
        # accounted for, yet without results: the processor raised (docs/processors.md)
        print(f"  {sink_c[Count.FAILED]} frame(s) failed in the processor: failed_ids in the results file")
    print("  every frame accounted for" if ok else "  NOT every frame accounted for")
    return ok
