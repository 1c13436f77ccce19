"""Recorder: the real recorder process writing a stream, next to h5py writing the same frames.

framepipe side: a publisher handing out ready buffers (as in the transport measurement)
→ ``framepipe record`` (the real recorder, real HDF5 file). Its rate is frames written
after the first ÷ time from the first to the last write, from its own summary.

h5py side: this process writes the same frames, one chunk per frame, into a dataset
created the way the recorder creates its own, with the same filter
(:func:`dataset_options`), then closes the file. Both files land in the same directory.

The recorder's file layer (:class:`~framepipe.subscribers.h5file.FrameFile`, frames plus
the id and timestamp columns) is also timed alone in this process, so the cost of the
file format and the cost of receiving the stream can be told apart.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from framepipe.bench.processes import BenchError, Fleet, local_ports, write_config
from framepipe.bench.transport import DISTINCT_FRAMES
from framepipe.cameras import synthetic_frame
from framepipe.core.counters import steady_rate
from framepipe.storage.h5file import FrameFile


def dataset_options() -> dict[str, Any]:
    """h5py ``create_dataset`` keywords of the recorder's frames dataset, beyond shape and chunks:
    the filter of the recorder's default compression (see subscribers/compression.py), so the
    raw-h5py comparison uses the very same filter."""
    from framepipe.config import RecorderConfig
    from framepipe.storage.compression import Codec

    rec = RecorderConfig()
    return Codec(rec.compression, rec.compression_level).dataset_options()


def raw_h5py_rate(path: Path, *, frames: int, size: int, dtype: str) -> dict[str, Any]:
    """h5py alone: write ``frames`` frames, one per chunk, with the recorder's filter."""
    data = [synthetic_frame(k, size, size, dtype, reel_frames=0) for k in range(DISTINCT_FRAMES)]
    path.unlink(missing_ok=True)
    with h5py.File(path, "w", libver="latest") as f:
        ds = f.create_dataset(
            "frames", shape=(frames, size, size), dtype=dtype, chunks=(1, size, size), **dataset_options()
        )
        t_first = t_last = 0
        cpu0 = time.process_time()
        for k in range(frames):
            t = time.time_ns()
            t_first = t_first or t
            ds[k] = data[k % DISTINCT_FRAMES]
            t_last = time.time_ns()
        cpu = time.process_time() - cpu0
        t0 = time.perf_counter()
    close_s = time.perf_counter() - t0
    # the same definition of rate as the recorder's: n-1 intervals between first and last
    fps = steady_rate(frames, t_first, t_last) or 0.0
    path.unlink(missing_ok=True)
    return {"fps": round(fps, 1), "cpu_ms_per_frame": round(1000 * cpu / frames, 3), "close_s": round(close_s, 3)}


def write_floor(path: Path, *, frames: int, size: int, dtype: str) -> float:
    """CPU ms per frame of writing the frames' bitshuffle-LZ4 chunks with plain ``os.write``
    into a new file next to the recorder's, written behind as the recorder's are: what the
    kernel alone costs to store those bytes, the floor under a recorder storing received chunks."""
    from framepipe.core import bitshuffle
    from framepipe.storage.write_behind import WriteBehind

    chunks = [
        bitshuffle.encode(synthetic_frame(k, size, size, dtype, reel_frames=0)).tobytes()
        for k in range(DISTINCT_FRAMES)
    ]
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        behind = WriteBehind(fd)
        t0 = os.times()
        for k in range(frames):
            os.write(fd, chunks[k % DISTINCT_FRAMES])
            behind.grown()
        t1 = os.times()
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return round(1000 * ((t1.user - t0.user) + (t1.system - t0.system)) / frames, 3)


def framefile_rate(path: Path, *, frames: int, size: int, dtype: str) -> dict[str, Any]:
    """The recorder's file layer alone (:class:`FrameFile`, in this process, no stream)."""
    data = [synthetic_frame(k, size, size, dtype, reel_frames=0) for k in range(DISTINCT_FRAMES)]
    path.unlink(missing_ok=True)
    f = FrameFile(path)
    f.open()
    try:
        cpu0 = time.process_time()
        t_first = time.time_ns()
        for k in range(frames):
            f.append(data[k % DISTINCT_FRAMES], frame_id=k, t_acq_ns=k, t_recv_ns=k)
        t_last = time.time_ns()
        cpu = time.process_time() - cpu0
    finally:
        f.close({})
    path.unlink(missing_ok=True)
    fps = frames / ((t_last - t_first) / 1e9) if t_last > t_first else 0.0
    return {"fps": round(fps, 1), "cpu_ms_per_frame": round(1000 * cpu / frames, 3)}


def measure(
    out: Path, *, frames: int, size: int, dtype: str, timeout_s: float = 300.0, wire: str = "none"
) -> dict[str, Any]:
    """The recorder process and raw h5py, same frames, same directory, same filter.

    ``wire="bitshuffle-lz4"``: the publisher sends the frames compressed (chunks made once
    before the run) and the recorder stores them as received, never compressing."""
    from framepipe.bench.pipeline import component_costs, rate, total_cpu_ms

    frame_bytes = size * size * np.dtype(dtype).itemsize
    run_dir = out / "runs" / "recorder"
    data_dir = run_dir / "data"
    h5_path = data_dir / "recorder_frames.h5"
    h5_path.unlink(missing_ok=True)  # the recorder never overwrites
    sections: dict[str, Any] = {
        "run": {"name": "recorder", "data_dir": str(data_dir)},
        "camera": {"width": size, "height": size, "dtype": dtype, "count": frames},
        **local_ports(),
        "recorders": [{"name": "recorder-frames", "stream": "frames", "path": str(h5_path), "hwm_frames": 64}],
    }
    sections["publisher"]["subscribers"] = ["recorder-frames"]
    sections["publisher"]["wire_compression"] = wire
    # frames over the wire, as from another host: on this one they would come through the
    # publisher's ring, raw, whatever the wire's compression (transport.shared_memory)
    sections["transport"] = {"shared_memory": False}
    me = [sys.executable, "-m", "framepipe.bench.transport"]
    with Fleet(run_dir) as fleet:
        config = write_config(run_dir / "deployment.toml", sections)
        rec = fleet.framepipe("recorder", "record", "--name", "recorder-frames", config=config)
        pub = fleet.start("publisher", [*me, "publish", "--config", str(config)])
        fleet.wait(timeout_s=timeout_s)
        fleet.check()
        summary = rec.summary()
        components = component_costs({"publisher": pub, "recorder": rec}, summary, key="written")
    if summary.get("written") != frames or summary.get("missing"):
        raise BenchError(f"recorder wrote {summary.get('written')} of {frames} frames")
    if wire != "none" and summary.get("chunks_as_received") != frames:
        raise BenchError(f"recorder stored {summary.get('chunks_as_received')} of {frames} chunks as received")
    with h5py.File(h5_path, "r") as f:  # what the recorder wrote is really there
        if f["entry/data/frames"].shape[0] != frames:
            raise BenchError(f"{h5_path}: {f['entry/data/frames'].shape[0]} frames, expected {frames}")
        filters = f["entry"].attrs.get("compression") or f["entry/data/frames"].compression
    fps = rate(summary, "written")
    h5_path.unlink()
    raw = raw_h5py_rate(data_dir / "raw_h5py.h5", frames=frames, size=size, dtype=dtype)
    layer = framefile_rate(data_dir / "framefile.h5", frames=frames, size=size, dtype=dtype)
    floor = write_floor(data_dir / "write_floor.bin", frames=frames, size=size, dtype=dtype)
    return {
        "frames": frames,
        "wire": wire,
        "wire_ratio": summary.get("wire_ratio", 1.0),
        "filter": filters or "none",
        "framepipe": {
            "fps": round(fps, 1),
            "mb_per_s": round(fps * frame_bytes / 1e6, 1),
            "cpu_ms_per_frame": total_cpu_ms(components),
            "recorder_cpu_ms_per_frame": components["recorder"]["cpu_ms_per_frame"],
            "components": components,
        },
        "raw_h5py": {**raw, "mb_per_s": round(raw["fps"] * frame_bytes / 1e6, 1)},
        "file_layer": layer,
        "write_floor_cpu_ms_per_frame": floor,
        "ratio": round(fps / raw["fps"], 3) if raw["fps"] else None,
    }


def cpu_comparison(compressing: list[dict[str, Any]], as_received: list[dict[str, Any]]) -> dict[str, Any]:
    """The recorder fed compressed frames against the compressing one: CPU per frame, the
    lowest of each side's runs (the run the neighbours disturbed least; CPU, not frames/s,
    is the figure compared), and their ratio (the issue's target: ≤ 0.3)."""

    def cpu(run: dict[str, Any]) -> float:
        return run["framepipe"].get("recorder_cpu_ms_per_frame") or float("inf")

    ours, today = min(as_received, key=cpu), min(compressing, key=cpu)
    ratio = cpu(ours) / cpu(today) if cpu(ours) != float("inf") and cpu(today) != float("inf") else None
    return {
        "framepipe": ours["framepipe"],
        "wire_ratio": ours.get("wire_ratio"),
        "compressing_recorder_cpu_ms_per_frame": cpu(today) if ratio is not None else None,
        "recorder_cpu_ms_per_frame_runs": [r["framepipe"].get("recorder_cpu_ms_per_frame") for r in as_received],
        "compressing_cpu_ms_per_frame_runs": [r["framepipe"].get("recorder_cpu_ms_per_frame") for r in compressing],
        "recorder_cpu_vs_compressing": round(ratio, 3) if ratio is not None else None,
        # the kernel's part, which neither recorder can avoid: its lowest in these runs
        "write_floor_cpu_ms_per_frame": min(r["write_floor_cpu_ms_per_frame"] for r in [*compressing, *as_received]),
    }
