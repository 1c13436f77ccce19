"""The synthetic camera: deterministic frames with moving features, no hardware needed.

Frame k is a fixed textured background (smooth blobs plus seeded noise) shifted by
(3k, 7k) pixels, plus a vertical grating whose spatial frequency changes with k, so
consecutive frames differ and so do their power spectra (a circular shift alone would
leave the power spectrum unchanged). :func:`synthetic_frame` regenerates frame k exactly,
which is how tests check that a file holds the right pixels.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from framepipe.cameras.base import Camera, Pacer
from framepipe.frame import Frame


@functools.lru_cache(maxsize=4)
def _background(height: int, width: int, dtype_name: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = np.iinfo(np.dtype(dtype_name)).max
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    img = np.zeros((height, width), np.float32)
    for _ in range(6):
        cy, cx = rng.uniform(-0.8, 0.8, 2)
        r = rng.uniform(0.05, 0.25)
        img += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r)).astype(np.float32)
    img /= img.max()
    img = 0.55 * img + 0.1 * rng.random((height, width), dtype=np.float32)
    # headroom of 0.35 of full scale is left for the grating added per frame
    out = (img * top).astype(dtype_name)
    out.setflags(write=False)
    return out


def _grating(k: int, width: int, dtype_name: str) -> np.ndarray:
    top = np.iinfo(np.dtype(dtype_name)).max
    cycles = 2 + (k % 29)  # frequency moves through 29 values
    x = np.arange(width, dtype=np.float32)
    row = (0.17 * top) * (1.0 + np.sin(2 * np.pi * cycles * x / width + 0.3 * k))
    return row.astype(dtype_name)


def synthetic_frame(k: int, height: int, width: int, dtype: str = "uint16", seed: int = 0) -> np.ndarray:
    """Frame ``k`` of the synthetic camera, exactly as the camera makes it."""
    base = _background(height, width, dtype, seed)
    frame = np.roll(base, shift=((3 * k) % height, (7 * k) % width), axis=(0, 1))
    frame += _grating(k, width, dtype)[None, :]
    return frame


class SyntheticCamera(Camera):
    """The default source: ``count`` frames (0 = endless) at ``fps`` (0 = as fast as possible)."""

    def __init__(self, height: int, width: int, dtype: str, fps: float = 0.0, count: int = 0, seed: int = 0):
        self.height, self.width, self.dtype = height, width, dtype
        self.fps, self.count, self.seed = fps, count, seed
        self._next = 0
        self._pacer = Pacer()

    def open(self) -> None:
        _background(self.height, self.width, self.dtype, self.seed)
        self._next = 0
        # the clock starts at the first grab, not here: the publisher opens the camera
        # and then waits for its subscribers, and frames "due" during that wait would
        # otherwise all come at once when it starts
        self._pacer.restart()

    def grab(self, timeout_s: float) -> Frame | None:
        k = self._next
        if self.count and k >= self.count:
            return None
        if self.fps > 0:
            self._pacer.wait_until(k / self.fps)
        array = synthetic_frame(k, self.height, self.width, self.dtype, self.seed)
        self._next = k + 1
        return Frame(frame_id=k, array=array, t_acq_ns=time.time_ns())

    def close(self) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        return {
            "source": "synthetic",
            "model": "framepipe synthetic",
            "width": self.width,
            "height": self.height,
            "pixel_format": self.dtype,
            "fps": self.fps,
            "seed": self.seed,
        }
