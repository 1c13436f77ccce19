"""The FFT family, the built-in processor (``fft``): a real 2-D FFT in float32, reduced to
the configured representation.

``rfft2`` of a real image holds all the information of ``fft2`` in half the spectrum
(Hermitian symmetry), and float32 halves the memory traffic of float64: together about
9× faster than ``numpy.fft.fft2`` on complex128 for the same information (measured by
``framepipe bench``, see docs/performance.md).

Representations (parameter ``result``, default ``workers.result``), all of shape
(H, W//2 + 1), sent as the output ``spectrum``:
- ``power``: |F|², float32 (the default: what spectra are usually plotted as)
- ``magnitude``: |F|, float32
- ``log_power``: log1p(|F|²), float32 (ready to display)
- ``complex``: the complex64 half-spectrum itself (invertible with ``irfft2``)

Temporaries per frame: the float32 copy of the frame (which the FFT may overwrite), the
complex spectrum scipy returns, and the result; nothing else. ``np.abs`` of a complex64
array is one pass (hypot) into a new float32 array, and the square, sqrt or log1p is
done in place on it: the previous ``re*re + im*im`` made two more full-size arrays and
was 0.4 ms slower per 1024×1024 frame than this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import scipy.fft
from pydantic import BaseModel, ConfigDict, Field

from framepipe.core.outputs import Output
from framepipe.processing.interface import FrameInfo, Processor

REPRESENTATIONS = ("power", "magnitude", "log_power", "complex")

#: BT.601 luminance weights for colour frames
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def spectrum(frame: np.ndarray, result: str = "power", out: np.ndarray | None = None) -> np.ndarray:
    """The 2-D spectrum of one frame (H, W) or colour frame (H, W, 3) in the given representation.

    The input is never modified. Single-threaded on purpose: parallelism comes from
    running more workers, one per core. ``out``: a float32 (H, W//2 + 1) array to write a
    real representation into (e.g. a slot of the worker's results ring), returned; the
    complex one is always a new array (scipy's FFT has no ``out``).
    """
    if result not in REPRESENTATIONS:
        raise ValueError(f"unknown result representation {result!r}; choose from {REPRESENTATIONS}")
    if frame.ndim == 3:
        # colour frames: transform luminance
        x = frame @ _LUMA
    else:
        x = frame.astype(np.float32)  # always a fresh array, so the FFT may overwrite it
    spec = scipy.fft.rfft2(x, overwrite_x=True, workers=1)
    if result == "complex":
        return spec
    out = np.abs(spec, out=out)
    del spec  # free the complex spectrum before the in-place pass (lower peak memory)
    if result == "magnitude":
        return out
    np.multiply(out, out, out=out)
    if result == "log_power":
        np.log1p(out, out=out)
    return out


class FFTParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    result: Literal["power", "magnitude", "log_power", "complex"] = Field(
        "power", description="|F|² (float32), |F|, log1p(|F|²), or the complex64 half-spectrum"
    )


class FFT(Processor):
    """The 2-D spectrum of the frame (colour: of its luminance), one output ``spectrum``."""

    Params = FFTParams

    def setup(self, params: FFTParams, frame_info: FrameInfo) -> list[Output]:
        shape = frame_info.shape
        if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 3)):
            raise ValueError(f"frames of shape {shape}: expected (H, W) or (H, W, 3)")
        self.result = params.result
        dtype = "complex64" if params.result == "complex" else "float32"
        return [Output("spectrum", dtype, (shape[0], shape[1] // 2 + 1))]

    def process(self, frame: np.ndarray, out: Mapping[str, np.ndarray] | None = None) -> Mapping[str, Any]:
        target = out.get("spectrum") if out is not None and self.result != "complex" else None
        return {"spectrum": spectrum(frame, self.result, out=target)}
