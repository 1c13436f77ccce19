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
import signal
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from framepipe.config import Config, run_id_now
from framepipe.core.counters import Count
from framepipe.core.errors import ConfigError
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
    status: bool = False,
) -> int:
    """Start every component locally, supervise them, print the summary; the exit status
    (:data:`EXIT_CODES`): 0 only if nothing is missing, 1 for an incomplete or failed run,
    130 when interrupted before the first frame with nothing written (``serve``: a standing
    deployment, 0 when it shut down cleanly).

    Meanwhile a live dashboard (``tui`` and a terminal) or a progress log line every few
    seconds. ``status``: every component's status endpoint on (:func:`with_status_ports`),
    so ``framepipe status`` answers with no flags.
    """
    from framepipe.ops.dashboard import RunMonitor, read_summary

    try:
        Path(config.run.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:  # nothing started yet: a config error, exit 2
        raise ConfigError(f"cannot create {config.run.data_dir!r}: {e.strerror or e}", key="run.data_dir") from None
    if status:
        config, overrides = with_status_ports(config, overrides)
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

        def source_took_frames() -> bool:
            # once the source has exited, its last summary says whether anything is left to drain
            s = read_summary(Path(tmp, f"{source}.json"))
            return s is not None and any(s.count(k) for k in (Count.ACQUIRED, Count.PUBLISHED, Count.ACCEPTED))

        children = ChildSet(
            stop_first=(source,),
            followers=tuple(f"worker-{i}" for i in range(config.workers.count)),
            spawn=spawn,
            # one acquisition: replace what crashed; an exit with a code is that component's verdict
            restart_policy=RestartPolicy(signals_only=not serve),
            drain_needed=source_took_frames,
        )
        monitor = RunMonitor(
            tmp,
            title=f"framepipe run '{config.run.name}'" + (" (serving)" if serve else ""),
            total=None if serve else config.camera.count,
            log_path=Path(config.run.data_dir, f"{config.run.name}.log"),
            tui=tui,
            run_id=config.run.id,
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
    if children.interrupted and not _wrote_anything(config, summaries):
        print(
            f"\nframepipe run '{config.run.name}': interrupted after {elapsed:.1f} s, before the first frame: "
            "nothing written"
        )
        return EXIT_INTERRUPTED
    if serve:
        pub = summaries.get("publisher")
        done = pub.counters.get(Count.ACQUISITIONS, 0) if pub is not None else "?"
        print(f"\nframepipe run --serve '{config.run.name}': up {elapsed:.1f} s, {done} acquisition(s)")
        if restarted:
            print("  restarts: " + ", ".join(f"{n} {c}×" for n, c in restarted.items()))
        return EXIT_OK if code == 0 else EXIT_FAILED
    ok = print_summary(config, summaries, children.codes, elapsed)
    if restarted:
        print("  restarts: " + ", ".join(f"{n} {c}×" for n, c in restarted.items()))
    # a component's own code (2 for its camera, say) is not the run's: it had started
    return EXIT_OK if code == 0 and ok else EXIT_FAILED


#: the exit status of ``framepipe run`` / ``acquire`` (README, "Exit codes"): nothing else leaks out
EXIT_OK = 0
#: incomplete or failed: some frame is not accounted for, or a component failed
EXIT_FAILED = 1
#: usage or config error: nothing started (ConfigError.exit_code, preflight)
EXIT_USAGE = 2
#: interrupted (Ctrl-C) before the first frame: nothing written
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "every frame accounted for",
    EXIT_FAILED: "incomplete or failed",
    EXIT_USAGE: "usage or config error, nothing started",
    EXIT_INTERRUPTED: "interrupted before the first frame, nothing written",
}

#: where ``framepipe run --status`` puts the status endpoints a config leaves unset: the port
#: map of configs/local.toml's comments; ``framepipe status`` looks there too
DEFAULT_STATUS_PORTS = {"publisher": 5552, "ventilator": 5561, "sink": 5574}
DEFAULT_RECORDER_STATUS_PORT = 5580


def with_status_ports(config: Config, overrides: list[str] | None = None) -> tuple[Config, list[str]]:
    """``config`` with every status endpoint on: those it sets stay, the others take
    :data:`DEFAULT_STATUS_PORTS` (recorders 5580, 5581, …); and the overrides that say so to
    the children."""
    extra: list[str] = []
    for section, port in DEFAULT_STATUS_PORTS.items():
        if getattr(config, section).status_port is None:
            extra.append(f"{section}.status_port={port}")
    for i, rec in enumerate(config.recorders):
        if rec.status_port is None:
            extra.append(f"recorders.{i}.status_port={DEFAULT_RECORDER_STATUS_PORT + i}")
    if not extra:
        return config, list(overrides or [])
    update: dict[str, Any] = {}
    for item in extra:
        key, _, value = item.partition("=")
        section, *rest = key.split(".")
        if section == "recorders":
            index = int(rest[0])
            recs = update.setdefault("recorders", list(config.recorders))
            recs[index] = recs[index].model_copy(update={"status_port": int(value)})
        else:
            update[section] = getattr(config, section).model_copy(update={"status_port": int(value)})
    return config.model_copy(update=update), [*(overrides or []), *extra]


def _wrote_anything(config: Config, summaries: Mapping[str, ComponentStatus | None]) -> bool:
    """Whether any recorder wrote a frame (a file exists for every acquisition that did)."""
    return any((s := summaries.get(r.name)) is not None and (s.count(Count.WRITTEN) or 0) > 0 for r in config.recorders)


def failure_reason(name: str, code: int, summary: ComponentStatus | None) -> str:
    """Why a component failed, in words: its own error line, else how it ended."""
    error = summary.error or summary.counters.get("error") if summary is not None else None
    if error:
        return f"{name}: {error}"
    if code < 0:
        try:
            return f"{name}: ended by {signal.Signals(-code).name} before it could stop cleanly"
        except ValueError:
            pass
    return f"{name}: exited with status {code}"


def latency_text(latency: object) -> str:
    """``latency p50 12.3 ms · p95 15.0 ms · p99 18.2 ms``; "" when not measured."""
    if not isinstance(latency, Mapping):
        return ""
    parts = [f"{q} {latency[q]:.1f} ms" for q in ("p50", "p95", "p99") if isinstance(latency.get(q), (int, float))]
    return "latency " + " · ".join(parts) if parts else ""


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
    acquired = rows[0][1]
    # missing: acquired frames not in every file (and not all processed), the verdict's figure
    done = [sink_c.get(Count.RECEIVED)] + [of(r.name).counters.get(Count.WRITTEN) for r in config.recorders]
    counted = [d for d in done if isinstance(d, int)]
    lowest = min(counted) if len(counted) == len(done) else None
    missing = (
        max(acquired - lowest, sink_c.get(Count.MISSING) or 0)
        if isinstance(acquired, int) and lowest is not None
        else None
    )
    rows.append(("missing", missing if missing is not None else "?", "", latency_text(sink_c.get(Count.LATENCY_MS))))
    print(f"\nframepipe run '{config.run.name}': {elapsed:.1f} s, data in {config.run.data_dir}/")
    for rec in config.recorders:
        path = of(rec.name).counters.get(Count.PATH)
        if path:
            print(f"  {rec.stream + ' file':<18}{path}")
    print(f"  {'stage':<18}{'frames':>8}{'frames/s':>10}  notes")
    for stage, n, rate, note in rows:
        print(f"  {stage:<18}{n!s:>8}{rate:>10}  {note}")
    failed = {n: c for n, c in codes.items() if c != 0}
    ok = (
        not failed
        and missing == 0
        and sink_c.get(Count.MISSING) == 0
        and sink_c.get(Count.RECEIVED) == acquired
        and all(
            of(r.name).counters.get(Count.MISSING) == 0 and of(r.name).counters.get(Count.WRITTEN) == acquired
            for r in config.recorders
        )
    )
    for name, code in failed.items():
        print(f"  failed: {failure_reason(name, code, summaries.get(name))}")
    if sink_c.get(Count.FAILED):
        # accounted for, yet without results: the processor raised (docs/processors.md)
        print(f"  {sink_c[Count.FAILED]} frame(s) failed in the processor: failed_ids in the results file")
    if ok:
        print("  every frame accounted for")
    elif not failed and missing == 0:
        print("  NOT every frame accounted for: a component did not report its count (see the rows with ?)")
    else:
        print("  NOT every frame accounted for")
    return ok
