"""Processor kernels: each built-in processor alone on one core (no sockets), through the
same :class:`~framepipe.processing.chain.Chain` a worker runs, beside the pipeline rate,
so a lab sees whether its processor or framepipe is the bottleneck; and the per-frame
overhead of the plugin call itself, measured on a trivial processor (identity sum).

The overhead is ``Chain.run`` minus the processor's own ``process`` on the same small
frame, best of several slices (the machine is shared: the fastest slice is the code, the
slower ones the neighbours). Target: under 0.05 ms (docs/processors.md).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.cameras import synthetic_frame
from framepipe.core.outputs import Output
from framepipe.processing.chain import Chain
from framepipe.processing.interface import FrameInfo, Processor

#: frames cycled through, so no kernel runs on one cached frame
DISTINCT_FRAMES = 4
#: the overhead target of the plugin call, ms per frame
OVERHEAD_TARGET_MS = 0.05
#: the trivial processor's frame: small, so the call's own cost is what is measured
OVERHEAD_FRAME = 16


class IdentitySum(Processor):
    """The trivial processor of the overhead measurement: the frame's sum, one scalar."""

    def setup(self, params: Any, frame_info: FrameInfo) -> list[Output]:
        return [Output("sum", "float64")]

    def process(self, frame: np.ndarray) -> Mapping[str, Any]:
        return {"sum": float(frame.sum())}


def _best_rate(call: Callable[[np.ndarray], Any], frames: list[np.ndarray], seconds: float) -> tuple[float, int]:
    """(best frames/s over 3 slices, frames run in all)."""
    call(frames[0])  # warm-up: FFT plans, page faults
    best, total = 0.0, 0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        deadline = t0 + seconds / 3
        while True:
            call(frames[n % len(frames)])
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best, total = max(best, n / (now - t0)), total + n
    return best, total


def _chains(size: int, dtype: str, refs: Path) -> dict[str, Chain]:
    """One chain per built-in, with references of the frames' size where it needs them."""
    reference = synthetic_frame(0, size, size, dtype, reel_frames=0).astype(np.float32)
    np.save(refs / "dark.npy", np.full((size, size), 10, np.float32))
    np.save(refs / "flat.npy", reference + 100)
    np.save(refs / "reference.npy", reference)
    quarter = size // 4
    rois = [
        {"name": f"r{i}", "y": quarter * i, "x": quarter * i, "height": quarter, "width": quarter} for i in range(4)
    ]
    return {
        "fft": Chain.build("fft", {"result": "power"}),
        "roi (4 ROIs)": Chain.build("roi", {"rois": rois}),
        "flatfield": Chain.build("flatfield", {"dark": str(refs / "dark.npy"), "flat": str(refs / "flat.npy")}),
        "flatfield → fft": Chain.build(
            ["flatfield", "fft"], {"flatfield": {"dark": str(refs / "dark.npy")}, "fft": {"result": "power"}}
        ),
        "phase_shift": Chain.build("phase_shift", {"reference": str(refs / "reference.npy")}),
    }


def kernel_rows(size: int, dtype: str, seconds: float) -> list[dict[str, Any]]:
    """Frames/s of each built-in processor (as a worker runs it) on ``size``² frames."""
    frames = [synthetic_frame(k, size, size, dtype, reel_frames=0) for k in range(DISTINCT_FRAMES)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="framepipe-bench-") as tmp:
        for name, chain in _chains(size, dtype, Path(tmp)).items():
            chain.setup(FrameInfo.of(frames[0]))
            fps, n = _best_rate(chain.run, frames, seconds)
            chain.teardown()
            rows.append(
                {
                    "processor": name,
                    "size": size,
                    "dtype": dtype,
                    "fps": round(fps, 1),
                    "ms_per_frame": round(1000 / fps, 3),
                    "frames": n,
                }
            )
    return rows


def plugin_overhead(seconds: float) -> dict[str, Any]:
    """Per-frame cost of the plugin call: the chain around :class:`IdentitySum` minus the
    bare ``process`` (output checks, dispatch, the outputs list)."""
    frames = [np.full((OVERHEAD_FRAME, OVERHEAD_FRAME), k, np.uint16) for k in range(DISTINCT_FRAMES)]
    chain = Chain.build(f"{__name__}:IdentitySum", {})
    chain.setup(FrameInfo.of(frames[0]))
    bare = IdentitySum()
    bare.setup(None, FrameInfo.of(frames[0]))
    direct_fps, _ = _best_rate(bare.process, frames, seconds / 2)
    chain_fps, _ = _best_rate(chain.run, frames, seconds / 2)
    overhead_ms = max(0.0, 1000 / chain_fps - 1000 / direct_fps)
    return {
        "processor": "identity sum",
        "frame": f"{OVERHEAD_FRAME}x{OVERHEAD_FRAME}",
        "direct_ms": round(1000 / direct_fps, 5),
        "chain_ms": round(1000 / chain_fps, 5),
        "overhead_ms": round(overhead_ms, 5),
        "target_ms": OVERHEAD_TARGET_MS,
    }


def measure(size: int, dtype: str, seconds: float) -> dict[str, Any]:
    """The ``processors`` section of bench.json."""
    return {"kernels": kernel_rows(size, dtype, seconds), "overhead": plugin_overhead(seconds)}
