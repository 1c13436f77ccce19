"""Saturated pixels: how many of a frame's pixels sit at the camera's full scale.

A saturated pixel has lost its value (more light than the sensor counts), which an operator
wants to see at once, as pylon Viewer and ImageJ show it. Full scale is the camera's bit
depth when its pixel format names one (``Mono12`` → 4095, though the frames are uint16),
else the dtype's maximum; float frames have none. The live view counts on the whole frame,
not on the subsample it shows (a few hot pixels would slip through), and only for the frames
it shows (a comparison and a count: about 1 ms per megapixel).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

_LAST_NUMBER = re.compile(r"(\d+)\D*$")


def full_scale(dtype: np.dtype, pixel_format: str | None = None) -> int | None:
    """The largest count a pixel of this camera can hold (None for float frames).

    The pixel format's bit depth (its last number: ``Mono12``, ``Mono10p``, ``BayerRG12``)
    when it is below the dtype's; otherwise (``uint16``, ``bgr24``, none) the dtype's maximum.
    """
    if dtype.kind not in "ui":
        return None
    top = int(np.iinfo(dtype).max)
    found = _LAST_NUMBER.search(pixel_format or "")
    if found:
        bits = int(found[1])
        if 0 < bits < dtype.itemsize * 8:
            return (1 << bits) - 1
    return top


@dataclasses.dataclass(frozen=True)
class Saturation:
    """Pixels at full scale in one frame (a colour pixel counts if any channel is)."""

    full_scale: int
    pixels: int
    fraction: float


def saturation(frame: np.ndarray, pixel_format: str | None = None) -> Saturation | None:
    """How many pixels of ``frame`` are at full scale (None when it has no full scale)."""
    level = full_scale(frame.dtype, pixel_format)
    if level is None or frame.size == 0:
        return None
    at_top = np.asarray(frame >= level)
    if frame.ndim == 3:
        at_top = np.asarray(at_top.any(axis=2))
    pixels = int(np.count_nonzero(at_top))
    return Saturation(level, pixels, pixels / at_top.size)
