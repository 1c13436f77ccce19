"""Pipeline throughput: publisher → ventilator → W workers → sink, real processes, W = 1 … cores+1.

Each run is a finite deployment started component by component through the CLI (the
argv ``framepipe run`` uses), with the synthetic camera at full speed and no recorders,
so what is measured is the processing pipeline. Throughput is the sink's steady rate:
frames received after the first one ÷ time from the first to the last (start-up is not
counted). Efficiency = that ÷ (min(W, cores) × kernel frames/s measured in the same run).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.bench.processes import BenchError, Fleet, MeasuredChild, local_ports, write_config
from framepipe.core.counters import steady_rate


def pipeline_sections(
    *,
    name: str,
    data_dir: Path,
    workers: int,
    frames: int,
    size: int,
    dtype: str,
    result: str = "power",
    fps: float = 0.0,
    results_subscribers: list[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    shared_memory: bool = True,
) -> dict[str, Any]:
    """The config of one benchmark deployment (free loopback ports, no recorders); with
    ``shared_memory`` the same-host hops take frames from the publisher's ring, else TCP."""
    sections: dict[str, Any] = {
        "recorders": [],
        "run": {"name": name, "data_dir": str(data_dir), "finish_timeout_s": 60.0},
        "camera": {"kind": "synthetic", "width": size, "height": size, "dtype": dtype, "fps": fps, "count": frames},
        **local_ports(),
        "workers": {"count": workers, "result": result},
        "transport": {"shared_memory": shared_memory},
    }
    sections["publisher"]["subscribers"] = ["ventilator"]
    sections["sink"]["subscribers"] = list(results_subscribers or [])
    for section, items in (overrides or {}).items():
        sections.setdefault(section, {}).update(items)
    return sections


def start_pipeline(fleet: Fleet, config: Path, workers: int) -> dict[str, MeasuredChild]:
    """Start the components in the launcher's order; they synchronise among themselves."""
    procs = {"sink": fleet.framepipe("sink", "sink", config=config)}
    for i in range(workers):
        procs[f"worker-{i}"] = fleet.framepipe(f"worker-{i}", "worker", "--index", str(i), config=config)
    procs["ventilator"] = fleet.framepipe("ventilator", "ventilator", config=config)
    procs["publisher"] = fleet.framepipe("publisher", "publisher", config=config)
    return procs


def rate(summary: dict[str, Any], key: str) -> float:
    """Steady rate of a counter from a component summary: (n-1) / (last - first)."""
    return steady_rate(summary.get(key, 0), summary.get("first_ns"), summary.get("last_ns")) or 0.0


def component_costs(procs: dict[str, MeasuredChild], sink: dict[str, Any], key: str = "received") -> dict[str, Any]:
    """Peak RSS of each process, and its CPU per frame in the steady state.

    ``cpu_ms_per_frame`` divides the CPU a process used between the first and last
    frame counted by ``sink[key]`` (the component at the end of the line) by the frames
    counted in that time, so interpreter start-up and imports (≈ 1 s of CPU per process)
    are not counted; ``cpu_s`` is the whole life.
    """
    out: dict[str, Any] = {}
    first, last = sink.get("first_ns"), sink.get("last_ns")
    steady_frames = max(sink.get(key, 0) - 1, 1)
    steady = (first, last) if first and last else None
    for name, child in procs.items():
        info = child.memory(steady)
        cpu = child.cpu_between(first, last) if first and last else None
        info["cpu_ms_per_frame"] = round(1000 * cpu / steady_frames, 3) if cpu is not None else None
        out[name] = info
    return out


def total_cpu_ms(components: dict[str, Any]) -> float | None:
    """CPU per frame of all the processes together, or None if one was not measured."""
    costs = [c.get("cpu_ms_per_frame") for c in components.values()]
    if not costs or any(c is None for c in costs):
        return None
    return round(float(sum(c for c in costs if c is not None)), 3)


def cpu_budget(components: dict[str, Any], cores: int, kernel_fps: float) -> dict[str, Any]:
    """Where the CPU goes per frame, and the rate this machine's cores allow at that cost.

    When every component runs on the same cores, the pipeline cannot exceed
    cores ÷ (CPU per frame of all components together), however fast the kernel is:
    ``cpu_bound_fps``. ``kernel_share`` is the part of that CPU the kernel itself needs.
    """
    total = total_cpu_ms(components)
    if total is None:
        return {"cpu_ms_per_frame": None, "cpu_bound_fps": None, "kernel_share": None}
    return {
        "cpu_ms_per_frame": round(total, 3),
        "cpu_bound_fps": round(cores * 1000 / total, 1) if total else None,
        "kernel_share": round(1000 / kernel_fps / total, 3) if total else None,
    }


def run_once(
    out: Path,
    *,
    workers: int,
    frames: int,
    size: int,
    dtype: str,
    result: str,
    timeout_s: float,
    shared_memory: bool = True,
) -> dict[str, Any]:
    """One finite run with ``workers`` workers; every frame must be accounted for."""
    path = "shm" if shared_memory else "tcp"
    run_dir = out / "runs" / f"pipeline-{path}-w{workers}"
    with Fleet(run_dir) as fleet:
        config = write_config(
            run_dir / "deployment.toml",
            pipeline_sections(
                name=f"pipeline-{path}-w{workers}",
                data_dir=run_dir / "data",
                workers=workers,
                frames=frames,
                size=size,
                dtype=dtype,
                result=result,
                shared_memory=shared_memory,
            ),
        )
        procs = start_pipeline(fleet, config, workers)
        fleet.wait(timeout_s=timeout_s)
        fleet.check()
        sink = procs["sink"].summary()
        if sink.get("received") != frames or sink.get("missing") != 0:
            raise BenchError(f"pipeline W={workers}: sink received {sink.get('received')} of {frames} frames")
        fps = rate(sink, "received")
        frame_bytes = size * size * np.dtype(dtype).itemsize
        summaries = [procs[f"worker-{i}"].summary() for i in range(workers)]
        busy = [w.get("busy_ns", 0) for w in summaries]
        processor_ns = sum(w.get("processor_cpu_ns", 0) for w in summaries)
        vent = procs["ventilator"].summary()
        return {
            "workers": workers,
            "transport": "shared memory" if shared_memory else "tcp",
            # what the ventilator's source and tasks really took (the path is chosen at sync)
            "ventilator_transport": vent.get("transport"),
            "tasks_local": vent.get("tasks_local", 0),
            "frames": frames,
            "received": sink["received"],
            "missing": sink["missing"],
            "duplicates": sink.get("duplicates", 0),
            "redispatched": vent.get("redispatched", 0),
            "fps": round(fps, 1),
            "mb_per_s": round(fps * frame_bytes / 1e6, 1),
            "per_worker": sink.get("per_worker", {}),
            "worker_busy_ms_per_frame": round(sum(busy) / 1e6 / frames, 3),
            # the kernel as it ran here, sharing the cores: CPU of the workers' threads in the
            # processor, per frame (standalone, one core, it is faster: see against_kernel)
            "processor_cpu_ms_per_frame": round(processor_ns / 1e6 / frames, 3) if processor_ns else None,
            "latency_ms": sink.get("latency_ms", {}),
            "components": component_costs(procs, sink),
            "config": str(config),
        }


def against_kernel(r: dict[str, Any], kernel_fps: float, parallel_fps: float | None = None) -> dict[str, Any]:
    """A run's figures against the kernel ceiling: efficiency, CPU-bound rate, and the CPU
    per frame spent outside one kernel call. Done again when a faster kernel is measured
    later in the same bench (every run is then divided by that one ceiling).

    With ``parallel_fps`` (the kernel in one process per core, all at once), a run with
    W ≥ cores is also divided by that: ``efficiency_parallel``, its share of what these
    cores reach when they run nothing but the kernel."""
    cores = os.cpu_count() or 1
    ceiling = min(r["workers"], cores) * kernel_fps
    r["ceiling_fps"] = round(ceiling, 1)
    r["efficiency"] = round(r["fps"] / ceiling, 3) if ceiling else None
    if parallel_fps and r["workers"] >= cores:
        r["parallel_ceiling_fps"] = round(parallel_fps, 1)
        r["efficiency_parallel"] = round(r["fps"] / parallel_fps, 3)
    r.update(cpu_budget(r["components"], cores, kernel_fps))
    if r.get("cpu_ms_per_frame") is not None:
        r["outside_kernel_ms"] = round(r["cpu_ms_per_frame"] - 1000 / kernel_fps, 3)
        if r.get("processor_cpu_ms_per_frame"):
            # what moving, checking and accounting cost, the kernel's slowdown under load aside
            r["outside_processor_ms"] = round(r["cpu_ms_per_frame"] - r["processor_cpu_ms_per_frame"], 3)
    return r


def measure(
    out: Path,
    *,
    worker_counts: list[int],
    frames: int,
    size: int,
    dtype: str,
    result: str,
    kernel_fps: float,
    timeout_s: float = 300.0,
    shared_memory: bool = True,
) -> list[dict[str, Any]]:
    """A run per worker count, each with its efficiency against the kernel ceiling, and
    the CPU per frame all components spend outside the kernel (``outside_kernel_ms``:
    all of it minus one kernel call per frame)."""
    runs = []
    for w in worker_counts:
        r = run_once(
            out,
            workers=w,
            frames=frames,
            size=size,
            dtype=dtype,
            result=result,
            timeout_s=timeout_s,
            shared_memory=shared_memory,
        )
        against_kernel(r, kernel_fps)
        runs.append(r)
    return runs
