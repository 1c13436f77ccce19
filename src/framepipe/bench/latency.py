"""Latency at a fixed rate: acquisition timestamp → arrival at the sink, p50 / p95 / p99.

The whole pipeline (real processes, W workers) runs with the synthetic camera paced at
``fps``. The sink stamps ``t_sink_ns`` on every result it republishes; a subscriber on
the results stream collects ``t_sink_ns - t_acq_ns`` for every frame, which gives the
full distribution for the histogram (the sink's own summary has the percentiles only,
and they are reported next to ours as a cross-check). Both stamps come from the same
host clock. The run also shows memory over time: peak RSS in the first and second half
of the run, per component.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.bench.pipeline import pipeline_sections, rate, start_pipeline
from framepipe.bench.processes import BenchError, Fleet, write_config

SUBSCRIBER = "bench-latency"


def measure(
    out: Path,
    *,
    workers: int,
    fps: float,
    frames: int,
    size: int,
    dtype: str,
    result: str,
    timeout_s: float = 300.0,
    shared_memory: bool = True,
) -> dict[str, Any]:
    """One paced run; every frame must arrive, and every latency is kept for the histogram."""
    run_dir = out / "runs" / ("latency" if shared_memory else "latency-tcp")
    with Fleet(run_dir) as fleet:
        config = write_config(
            run_dir / "deployment.toml",
            pipeline_sections(
                name="latency",
                data_dir=run_dir / "data",
                workers=workers,
                frames=frames,
                size=size,
                dtype=dtype,
                result=result,
                fps=fps,
                results_subscribers=[SUBSCRIBER],
                shared_memory=shared_memory,
            ),
        )
        argv = [sys.executable, "-m", "framepipe.bench.transport", "subscribe", "--config", str(config)]
        sub = fleet.start("subscriber", [*argv, "--name", SUBSCRIBER, "--stream", "results"])
        procs = start_pipeline(fleet, config, workers)
        fleet.wait(timeout_s=timeout_s)
        fleet.check()
        sub_summary = sub.summary()
        samples = np.array(sub_summary.get("latency_ms_samples", []), dtype=np.float64)
        stages = {k: np.array(v, dtype=np.float64) for k, v in sub_summary.get("stage_ms_samples", {}).items()}
        sink = procs["sink"].summary()
        steady = (sink["first_ns"], sink["last_ns"]) if sink.get("first_ns") and sink.get("last_ns") else None
        memory = {name: child.memory(steady) for name, child in {**procs, "subscriber": sub}.items()}
    if samples.size != frames or sink.get("missing") != 0:
        raise BenchError(f"latency run: {samples.size} of {frames} results seen, sink missing {sink.get('missing')}")
    p50, p95, p99 = (float(np.percentile(samples, q)) for q in (50, 95, 99))
    achieved = rate(sink, "received")
    return {
        "workers": workers,
        "transport": "shared memory" if shared_memory else "tcp",
        "fps": fps,
        "achieved_fps": round(achieved, 1),
        # the pipeline could not keep up: the latency is mostly time queued in the HWMs
        "saturated": achieved < 0.95 * fps,
        "frames": frames,
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(float(samples.max()), 2),
        "mean_ms": round(float(samples.mean()), 2),
        "sink_latency_ms": sink.get("latency_ms", {}),
        # where the time went: p50 / p99 of each stage (they do not add up percentile by percentile)
        "stages_ms": {
            k: {"p50": round(float(np.percentile(v, 50)), 2), "p99": round(float(np.percentile(v, 99)), 2)}
            for k, v in stages.items()
            if v.size
        },
        "samples_ms": [round(float(x), 3) for x in samples],
        "components": memory,
    }
