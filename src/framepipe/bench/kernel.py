"""Kernel ceiling: the worker's processing of one frame alone, frames/s on one core.

This is exactly what a worker does per frame (:func:`framepipe.fft.spectrum`), run in
this process on the synthetic camera's frames, with no sockets: the CPU ceiling every
pipeline figure is divided by.
"""

from __future__ import annotations

import time
from typing import Any

from framepipe.cameras import synthetic_frame
from framepipe.processing.fft import spectrum

#: frames cycled through, so the kernel does not run on one cached frame
DISTINCT_FRAMES = 4


def kernel_rate(size: int, dtype: str, result: str = "power", *, seconds: float = 1.0) -> dict[str, Any]:
    """Frames/s of ``spectrum`` on ``size``×``size`` frames of ``dtype``, best of 3 slices.

    Best-of-slices because the machine is shared: the kernel's own speed is the fastest
    slice; the slower ones measured the neighbours.
    """
    frames = [synthetic_frame(k, size, size, dtype, reel_frames=0) for k in range(DISTINCT_FRAMES)]
    spectrum(frames[0], result)  # warm-up: FFT plan cache, page faults
    best = 0.0
    total_n, total_t = 0, 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        deadline = t0 + seconds / 3
        while True:
            spectrum(frames[n % DISTINCT_FRAMES], result)
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, n / (now - t0))
        total_n, total_t = total_n + n, total_t + (now - t0)
    return {
        "size": size,
        "dtype": dtype,
        "result": result,
        "fps": round(best, 1),
        "fps_mean": round(total_n / total_t, 1),
        "ms_per_frame": round(1000 / best, 3),
        "frames": total_n,
    }


def measure(sizes: list[int], dtypes: list[str], result: str, seconds: float) -> list[dict[str, Any]]:
    """Kernel rate for every size × dtype."""
    return [kernel_rate(s, d, result, seconds=seconds) for s in sizes for d in dtypes]
