"""The synthetic camera: deterministic frames with moving features, no hardware needed.

Its frames form a reel, rendered once when the camera opens and then played in a loop,
so a frame costs no CPU — like a real camera, whose driver hands over a buffer filled by
DMA. (Rendering every 1024² frame cost the publisher 0.3 ms and, through the caches it
evicted, the processes around it more: a 2-core W=2 pipeline needed 7.6 ms of CPU per
frame with it and 6.0 ms without, so `framepipe bench` measured the stand-in camera as
much as the pipeline; docs/performance.md.)

Reel frame j is a fixed textured background (smooth blobs plus seeded noise) shifted by
(3j, 7j) pixels, plus a vertical grating whose spatial frequency changes with j, so
consecutive frames differ and so do their power spectra (a circular shift alone would
leave the power spectrum unchanged). Frame k is reel frame k mod the reel's length
(:func:`reel_length`: ``camera.reel_frames``, 32 by default, fewer when they would take
more than 32 MiB); with ``reel_frames = 0``, or frames over 16 MiB, every frame k is
rendered as frame j = k would be: all distinct, at the old cost. :func:`synthetic_frame`
gives frame k exactly, which is how tests check that a file holds the right pixels.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np

from framepipe.cameras.base import Camera, Pacer
from framepipe.core.frame import Frame


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


#: distinct frames in the reel by default (camera.reel_frames) ...
REEL_FRAMES = 32
#: ... and at most this many bytes of them: frames so large that two would not fit are
#: rendered one by one instead (no reel)
REEL_BYTES = 32 * 1024 * 1024


def reel_length(height: int, width: int, dtype: str, reel_frames: int = REEL_FRAMES) -> int:
    """How many distinct frames the camera plays in a loop at this size (0: no loop, every
    frame rendered)."""
    fit = REEL_BYTES // (height * width * np.dtype(dtype).itemsize)
    if reel_frames == 0 or fit < 2:
        return 0
    return min(reel_frames, fit)


def _render(j: int, height: int, width: int, dtype: str, seed: int) -> np.ndarray:
    base = _background(height, width, dtype, seed)
    frame = np.roll(base, shift=((3 * j) % height, (7 * j) % width), axis=(0, 1))
    frame += _grating(j, width, dtype)[None, :]
    frame.setflags(write=False)  # shared by every frame j + n × reel length
    return frame


@functools.lru_cache(maxsize=4)
def _reel(height: int, width: int, dtype: str, seed: int, length: int) -> tuple[np.ndarray, ...]:
    return tuple(_render(j, height, width, dtype, seed) for j in range(length))


def synthetic_frame(
    k: int, height: int, width: int, dtype: str = "uint16", seed: int = 0, reel_frames: int = REEL_FRAMES
) -> np.ndarray:
    """Frame ``k`` of the synthetic camera, exactly as the camera sends it (read-only)."""
    length = reel_length(height, width, dtype, reel_frames)
    if length == 0:
        return _render(k, height, width, dtype, seed)
    return _reel(height, width, dtype, seed, length)[k % length]


class SyntheticCamera(Camera):
    """The default source: ``count`` frames (0 = endless) at ``fps`` (0 = as fast as possible)."""

    def __init__(
        self,
        height: int,
        width: int,
        dtype: str,
        fps: float = 0.0,
        count: int = 0,
        seed: int = 0,
        reel_frames: int = REEL_FRAMES,
    ):
        self.height, self.width, self.dtype = height, width, dtype
        self.fps, self.count, self.seed, self.reel_frames = fps, count, seed, reel_frames
        self._next = 0
        self._pacer = Pacer()

    def open(self) -> None:
        synthetic_frame(0, self.height, self.width, self.dtype, self.seed, self.reel_frames)  # the reel, now
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
        array = synthetic_frame(k, self.height, self.width, self.dtype, self.seed, self.reel_frames)
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
            # frames loop with this period (0: every frame distinct)
            "reel_frames": reel_length(self.height, self.width, self.dtype, self.reel_frames),
        }
