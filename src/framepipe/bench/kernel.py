"""Kernel ceiling: the worker's processing of one frame alone, frames/s on one core.

This is exactly what a worker does per frame (:func:`framepipe.fft.spectrum`), run in
this process on the synthetic camera's frames, with no sockets: the CPU ceiling every
pipeline figure is divided by.

Beside it, :func:`parallel_rate`: the same kernel in one process per core, all at once,
still with nothing else running. Cores share their last-level cache and memory bandwidth
(and on some machines their execution units), so this is what W ≥ cores could reach with a
transport and bookkeeping that cost nothing: the part of the gap to ``cores × kernel``
that is the machine's, not framepipe's.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from typing import Any

from framepipe.cameras import synthetic_frame
from framepipe.processing.fft import spectrum

#: frames cycled through, so the kernel does not run on one cached frame
DISTINCT_FRAMES = 4


#: slices of a timed window; the best slice is kept
SLICES = 3


def _frames(size: int, dtype: str, result: str) -> list[Any]:
    """The frames the kernel cycles through, after one warm-up call (FFT plan, page faults)."""
    frames = [synthetic_frame(k, size, size, dtype, reel_frames=0) for k in range(DISTINCT_FRAMES)]
    spectrum(frames[0], result)
    return frames


def _timed_slices(frames: list[Any], result: str, seconds: float) -> list[tuple[int, float]]:
    """(kernel calls, seconds) in each of SLICES back-to-back slices of ``seconds``."""
    slices, n = [], 0
    for _ in range(SLICES):
        k, t0 = 0, time.perf_counter()
        deadline = t0 + seconds / SLICES
        while True:
            spectrum(frames[n % DISTINCT_FRAMES], result)
            k, n = k + 1, n + 1
            now = time.perf_counter()
            if now >= deadline:
                break
        slices.append((k, now - t0))
    return slices


def kernel_rate(size: int, dtype: str, result: str = "power", *, seconds: float = 1.0) -> dict[str, Any]:
    """Frames/s of ``spectrum`` on ``size``×``size`` frames of ``dtype``, best of SLICES slices.

    Best-of-slices because the machine is shared: the kernel's own speed is the fastest
    slice; the slower ones measured the neighbours.
    """
    slices = _timed_slices(_frames(size, dtype, result), result, seconds)
    best = max(k / t for k, t in slices)
    total_n, total_t = sum(k for k, _ in slices), sum(t for _, t in slices)
    return {
        "size": size,
        "dtype": dtype,
        "result": result,
        "fps": round(best, 1),
        "fps_mean": round(total_n / total_t, 1),
        "ms_per_frame": round(1000 / best, 3),
        "frames": total_n,
    }


#: how long the processes of :func:`parallel_rate` may take to start and warm up
PARALLEL_START_TIMEOUT_S = 60.0


def _kernel_process(
    size: int,
    dtype: str,
    result: str,
    seconds: float,
    barrier: threading.Barrier,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    """One of :func:`parallel_rate`'s processes: warm up, wait for the others, then count
    kernel calls in each of SLICES equal slices of ``seconds``, all started together."""
    frames = _frames(size, dtype, result)
    barrier.wait(PARALLEL_START_TIMEOUT_S)
    rates = [k / t for k, t in _timed_slices(frames, result, seconds)]
    out.put(rates)


def parallel_rate(
    size: int, dtype: str, result: str = "power", *, processes: int, seconds: float = 1.0
) -> dict[str, Any]:
    """Frames/s of ``processes`` kernels at once, one process each, nothing else running:
    the sum over processes of each slice's rate, best slice kept (the slices start together)."""
    ctx = multiprocessing.get_context("spawn")  # no fork of the bench's threads and sockets
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_kernel_process, args=(size, dtype, result, seconds, barrier, out), daemon=True)
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        per_process = [out.get(timeout=PARALLEL_START_TIMEOUT_S + seconds) for _ in procs]
    except queue.Empty:
        raise RuntimeError(f"the {processes} parallel kernel processes did not report within the timeout") from None
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    best = max(sum(rates[i] for rates in per_process) for i in range(SLICES))
    return {
        "size": size,
        "dtype": dtype,
        "result": result,
        "processes": processes,
        "fps": round(best, 1),
        "ms_per_frame_each": round(1000 * processes / best, 3),
    }


def measure(sizes: list[int], dtypes: list[str], result: str, seconds: float) -> list[dict[str, Any]]:
    """Kernel rate for every size × dtype."""
    return [kernel_rate(s, d, result, seconds=seconds) for s in sizes for d in dtypes]
