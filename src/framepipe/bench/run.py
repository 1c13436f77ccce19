"""``framepipe bench``: every measurement, side by side, in one run on this machine.

Order matters on a shared machine: each ceiling is measured right before the figures
divided by it (kernel before pipeline), and every comparison is between two
measurements of this run, never against a number from elsewhere.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from framepipe import __version__
from framepipe.bench import (
    MEASUREMENTS,
    kernel,
    latency,
    naive,
    pipeline,
    processors,
    recorder,
    report,
    transport,
    wire,
)


@dataclasses.dataclass
class Plan:
    """How much of each measurement a run does (``--quick`` or the full run)."""

    kernel_s: float
    wire_s: float
    pipeline_frames: int
    naive_frames: int
    transport_frames: int
    recorder_frames: int
    latency_frames: int
    repeat: int


QUICK = Plan(
    kernel_s=0.3,
    wire_s=0.3,
    pipeline_frames=150,
    naive_frames=16,
    transport_frames=400,
    recorder_frames=100,
    latency_frames=150,
    repeat=1,
)
FULL = Plan(
    kernel_s=1.5,
    wire_s=1.5,
    pipeline_frames=1000,
    naive_frames=60,
    transport_frames=3000,
    recorder_frames=500,
    latency_frames=1000,
    repeat=3,
)


@dataclasses.dataclass
class Options:
    """The command line of ``framepipe bench``."""

    out: Path
    quick: bool = False
    size: int = 1024
    dtype: str = "uint16"
    result: str = "power"
    only: tuple[str, ...] = MEASUREMENTS
    latency_fps: float = 100.0
    max_workers: int | None = None
    repeat: int | None = None


def _machine() -> dict[str, Any]:
    import numpy
    import scipy
    import zmq

    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count() or 1,
        "cpu": model,
        "loadavg_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "framepipe": __version__,
    }


def _best(runs: list[dict[str, Any]], key: str = "fps") -> dict[str, Any]:
    """The fastest of repeated runs (the one the neighbours disturbed least), with all figures kept."""
    best = dict(max(runs, key=lambda r: r[key] or 0))
    best[f"{key}_runs"] = [r[key] for r in runs]
    return best


def _best_pair(runs: list[dict[str, Any]], ours: str, theirs: str) -> dict[str, Any]:
    """Repeated (framepipe, reference) pairs: the best of each side, and their ratio.

    Best against best, not the best ratio of a pair: a lucky pair would flatter us.
    """
    out = dict(runs[0])
    out[ours] = _best([r[ours] for r in runs])
    out[theirs] = _best([r[theirs] for r in runs])
    out["ratio"] = round(out[ours]["fps"] / out[theirs]["fps"], 3) if out[theirs]["fps"] else None
    out["ratio_runs"] = [r["ratio"] for r in runs]
    return out


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def run(opts: Options) -> dict[str, Any]:
    """Run the selected measurements; returns the results (also written to ``opts.out``)."""
    plan = dataclasses.replace(QUICK if opts.quick else FULL)
    if opts.repeat is not None:
        plan.repeat = opts.repeat
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    results: dict[str, Any] = {
        "command": " ".join(["framepipe", "bench", *sys.argv[2:]]) if sys.argv[1:2] == ["bench"] else None,
        "quick": opts.quick,
        "frame": f"{opts.size}x{opts.size} {opts.dtype}",
        "result": opts.result,
        "machine": _machine(),
        "plan": dataclasses.asdict(plan),
        "outputs": {"json": str(out / "bench.json"), "png": str(out / "bench.png")},
    }
    t_start = time.monotonic()
    sizes = sorted({1024, 2048, opts.size})
    dtypes = sorted({"uint8", "uint16", opts.dtype})
    kernel_fps = None
    if "kernel" in opts.only or "pipeline" in opts.only:
        _say(f"kernel: {sizes} × {dtypes}, {plan.kernel_s:g} s each")
        results["kernel"] = kernel.measure(sizes, dtypes, opts.result, plan.kernel_s)
        kernel_fps = next(k["fps"] for k in results["kernel"] if k["size"] == opts.size and k["dtype"] == opts.dtype)
    if "processors" in opts.only:
        _say(f"processors: each built-in on {opts.size}×{opts.size} {opts.dtype}, and the plugin call's overhead")
        results["processors"] = processors.measure(opts.size, opts.dtype, plan.kernel_s)
    if "pipeline" in opts.only:
        assert kernel_fps is not None
        ceiling_entry = next(k for k in results["kernel"] if k["size"] == opts.size and k["dtype"] == opts.dtype)
        kernel_samples = [kernel_fps]
        # the kernel on every core at once, nothing else running: what the machine itself allows
        parallel = kernel.parallel_rate(opts.size, opts.dtype, opts.result, processes=cores, seconds=plan.kernel_s)
        parallel_samples = [parallel["fps"]]
        counts = list(range(1, (opts.max_workers or cores + 1) + 1))
        # each W through shared memory (the default on one host) and through TCP
        by_w: dict[tuple[int, bool], list[dict[str, Any]]] = {(w, shm): [] for w in counts for shm in (True, False)}
        for rep in range(plan.repeat):  # interleaved, so a busy minute hits every W and path alike
            for w in counts:
                for shm in (True, False):
                    path = "shared memory" if shm else "tcp"
                    _say(f"pipeline: W={w}, {path}, {plan.pipeline_frames} frames (run {rep + 1} of {plan.repeat})")
                    # the ceiling is the fastest kernel seen in this bench: measured again
                    # before every run, as the neighbours' load comes and goes
                    again = kernel.kernel_rate(opts.size, opts.dtype, opts.result, seconds=plan.kernel_s / 2)
                    kernel_samples.append(again["fps"])
                    kernel_fps = max(kernel_fps, again["fps"])
                    at_once = kernel.parallel_rate(
                        opts.size, opts.dtype, opts.result, processes=cores, seconds=plan.kernel_s / 2
                    )
                    parallel_samples.append(at_once["fps"])
                    if at_once["fps"] > parallel["fps"]:
                        parallel = at_once
                    by_w[(w, shm)] += pipeline.measure(
                        out,
                        worker_counts=[w],
                        frames=plan.pipeline_frames,
                        size=opts.size,
                        dtype=opts.dtype,
                        result=opts.result,
                        kernel_fps=kernel_fps,
                        shared_memory=shm,
                    )
        for runs in by_w.values():
            for r in runs:
                # every run against the one, fastest ceiling, and the fastest parallel kernel
                pipeline.against_kernel(r, kernel_fps, parallel["fps"])
        results["pipeline"] = [_best(by_w[(w, True)]) for w in counts]
        results["pipeline_tcp"] = [_best(by_w[(w, False)]) for w in counts]
        ceiling_entry["fps"], ceiling_entry["ms_per_frame"] = kernel_fps, round(1000 / kernel_fps, 3)
        ceiling_entry["fps_samples"] = kernel_samples
        parallel["fps_samples"] = parallel_samples
        parallel["of_cores_x_kernel"] = round(parallel["fps"] / (cores * kernel_fps), 3)
        results["kernel_parallel"] = parallel
    if "naive" in opts.only:
        w = min(2, cores)
        _say(f"naive baseline: W={w}, {plan.naive_frames} frames")
        results["naive"] = _best(
            [
                naive.measure(out, workers=w, frames=plan.naive_frames, size=opts.size, dtype=opts.dtype)
                for _ in range(plan.repeat)
            ]
        )
    if "transport" in opts.only:
        _say(f"transport: {plan.transport_frames} frames each way")
        runs = [
            transport.measure(out, frames=plan.transport_frames, size=opts.size, dtype=opts.dtype)
            for _ in range(plan.repeat)
        ]
        results["transport"] = _best_pair(runs, "framepipe", "raw_pyzmq")
        results["transport"]["framepipe_shm"] = _best([r["framepipe_shm"] for r in runs])
    if "recorder" in opts.only:
        _say(f"recorder: {plan.recorder_frames} frames each, compressing and fed compressed frames, alternately")
        # interleaved, so a busy minute hits both recorders alike: today's compressing recorder,
        # and the same recorder fed frames compressed on the wire, storing them as received
        runs, wired = [], []
        for _ in range(plan.repeat):
            runs.append(recorder.measure(out, frames=plan.recorder_frames, size=opts.size, dtype=opts.dtype))
            wired.append(
                recorder.measure(out, frames=plan.recorder_frames, size=opts.size, dtype=opts.dtype, wire=wire.NAME)
            )
        results["recorder"] = _best_pair(runs, "framepipe", "raw_h5py")
        results["recorder"]["file_layer"] = _best([r["file_layer"] for r in runs])
        raw_fps = results["recorder"]["raw_h5py"]["fps"]
        results["recorder"]["file_layer_ratio"] = round(results["recorder"]["file_layer"]["fps"] / raw_fps, 3)
        results["recorder"]["wire_compressed"] = recorder.cpu_comparison(runs, wired)
    if "wire" in opts.only:
        _say(f"wire compression: {opts.size}² {opts.dtype}, {plan.wire_s:g} s per figure")
        results["wire"] = wire.measure(
            out,
            size=opts.size,
            dtype=opts.dtype,
            result=opts.result,
            seconds=plan.wire_s,
            frames=plan.recorder_frames,
        )
    if "latency" in opts.only:
        w = min(2, cores)
        for shm, key in ((True, "latency"), (False, "latency_tcp")):
            path = "shared memory" if shm else "tcp"
            _say(f"latency: {plan.latency_frames} frames at {opts.latency_fps:g} fps, W={w}, {path}")
            results[key] = latency.measure(
                out,
                workers=w,
                fps=opts.latency_fps,
                frames=plan.latency_frames,
                size=opts.size,
                dtype=opts.dtype,
                result=opts.result,
                shared_memory=shm,
            )
        results["memory"] = results["latency"]["components"]
    elif results.get("pipeline"):
        results["memory"] = results["pipeline"][-1]["components"]
    results["machine"]["loadavg_end"] = round(os.getloadavg()[0], 2)
    results["elapsed_s"] = round(time.monotonic() - t_start, 1)
    results["targets"] = report.targets(results)
    problem = report.plot(results, out / "bench.png")
    if problem:
        results["outputs"]["png"] = None
        results["outputs"]["png_problem"] = problem
    report.write_json(results, out / "bench.json")
    print(report.table(results))
    if problem:
        _say(problem)
    return results
