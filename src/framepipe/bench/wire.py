"""Wire compression: what bitshuffle-LZ4 saves on the link, and what it costs in CPU per frame.

In this process, no sockets, on four kinds of frame: the synthetic camera's, a real-looking
one (a smooth scene with shot noise, 12 bits in uint16), a dark one (offset plus read noise:
compresses well) and uniform noise (the worst case). For each: bytes on the wire per frame
and the ratio; CPU per frame to compress (the publisher) and to decompress into a reused
buffer (a worker); both as a fraction of the ceiling measured in the same run — the cost of
copying the frame once (memcpy) and the worker's kernel on it (the FFT).

The frames recorder's own cost is measured on its file layer (:class:`FrameFile`): writing a
frame it compresses (today's recorder) against storing the chunk it received. The results
stream is measured too (float32 spectra), though it is not compressed on the wire.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.cameras import synthetic_frame
from framepipe.core import bitshuffle
from framepipe.processing.fft import spectrum
from framepipe.storage.h5file import FrameFile

#: the wire encoding measured
NAME = bitshuffle.NAME


def frame_kinds(size: int, dtype: str) -> dict[str, np.ndarray]:
    """The frames measured, by name (the same every run: fixed seeds)."""
    rng = np.random.default_rng(11)
    top = np.iinfo(dtype).max
    y, x = np.mgrid[0:size, 0:size] / size
    scene = 0.5 + 0.4 * np.sin(6 * x) * np.cos(4 * y) + 0.3 * np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.01)
    full = min(top, 4095)  # a 12-bit sensor in uint16; 8 bits in uint8
    real = np.clip(rng.poisson(scene / scene.max() * full * 0.8), 0, full).astype(dtype)
    dark = np.clip(rng.normal(100 if top > 255 else 10, 3, (size, size)), 0, top).astype(dtype)
    return {
        "synthetic": synthetic_frame(0, size, size, dtype, reel_frames=0),
        "real_looking": real,
        "dark": dark,
        "noise": rng.integers(0, top, (size, size), dtype=dtype, endpoint=True),
    }


def _cpu_ms(fn: Callable[[], Any], *, seconds: float) -> float:
    """CPU ms per call of ``fn`` (process CPU: the codec's threads too), best of 3 slices."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(3):
        n, c0, t_end = 0, time.process_time(), time.perf_counter() + seconds / 3
        while True:
            fn()
            n += 1
            if time.perf_counter() >= t_end:
                break
        best = min(best, (time.process_time() - c0) / n)
    return round(best * 1000, 3)


def _recorder_cpu_ms(path: Path, frame: np.ndarray, chunk: Any, frames: int) -> float:
    """CPU ms per frame of the recorder's file layer: compressing (chunk None) or not."""
    path.unlink(missing_ok=True)
    f = FrameFile(path)
    f.open()
    try:
        c0 = time.process_time()
        for k in range(frames):
            f.append(frame, frame_id=k, t_acq_ns=k, t_recv_ns=k, chunk=chunk)
        cpu = time.process_time() - c0
    finally:
        f.close({})
    path.unlink(missing_ok=True)
    return round(1000 * cpu / frames, 3)


def measure(out: Path, *, size: int, dtype: str, result: str, seconds: float, frames: int) -> dict[str, Any]:
    """Every figure of the wire compression, for ``size``² frames of ``dtype``."""
    kinds = frame_kinds(size, dtype)
    raw_bytes = size * size * np.dtype(dtype).itemsize
    buffer = np.empty((size, size), dtype)
    copy_ms = _cpu_ms(lambda: np.copyto(buffer, kinds["noise"]), seconds=seconds)
    kernel_ms = _cpu_ms(lambda: spectrum(kinds["synthetic"], result), seconds=seconds)
    rows = []
    for name, frame in kinds.items():
        chunk = bitshuffle.encode(frame)
        compress_ms = _cpu_ms(functools.partial(bitshuffle.encode, frame), seconds=seconds)
        decode_ms = _cpu_ms(
            functools.partial(bitshuffle.decode, chunk, buffer.shape, buffer.dtype, out=buffer), seconds=seconds
        )
        rows.append(
            {
                "frame": name,
                "raw_bytes": raw_bytes,
                "wire_bytes": int(chunk.nbytes),
                "ratio": round(raw_bytes / chunk.nbytes, 3),
                "publisher_compress_ms": compress_ms,
                "worker_decompress_ms": decode_ms,
                "compress_vs_copy": round(compress_ms / copy_ms, 2) if copy_ms else None,
                "decompress_vs_kernel": round(decode_ms / kernel_ms, 3) if kernel_ms else None,
                "publisher_cores_at_100_fps": round(compress_ms * 100 / 1000, 3),
                "publisher_cores_at_500_fps": round(compress_ms * 500 / 1000, 3),
            }
        )
    frame = kinds["real_looking"]
    path = out / "runs" / "wire" / "recorder.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    compressing = _recorder_cpu_ms(path, frame, None, frames)
    as_received = _recorder_cpu_ms(path, frame, bitshuffle.encode(frame), frames)
    spectra = {}
    for name in ("synthetic", "real_looking"):
        s = np.ascontiguousarray(spectrum(kinds[name], result))
        c = bitshuffle.encode(s)
        spectra[name] = {
            "dtype": s.dtype.name,
            "raw_bytes": int(s.nbytes),
            "wire_bytes": int(c.nbytes),
            "ratio": round(s.nbytes / c.nbytes, 3),
            "compress_ms": _cpu_ms(functools.partial(bitshuffle.encode, s), seconds=seconds),
        }
    return {
        "frame_size": f"{size}x{size} {dtype}",
        "ceilings": {"copy_ms": copy_ms, "kernel_ms": kernel_ms},
        "frames": rows,
        "recorder_file_layer": {
            "frame": "real_looking",
            "compressing_cpu_ms": compressing,
            "as_received_cpu_ms": as_received,
            "ratio": round(as_received / compressing, 3) if compressing else None,
        },
        "results": spectra,
    }
