"""Replay of an HDF5 file recorded by framepipe, so operators can re-run processing on old data.

Reads ``/entry/data/frames``, ``frame_id`` and ``t_acq_ns`` (the recorder's layout, see
subscribers/h5file.py) with plain h5py; ``hdf5plugin`` is imported first so compressed
files open. Frames go out in file order with their recorded frame ids, so a recording of a
replay holds the same ids and pixels as the original.

Pace (``camera.replay_pace``): ``fps`` publishes at ``camera.fps`` (0 = as fast as
possible); ``original`` reproduces the recorded intervals from ``t_acq_ns``.
``t_acq_ns`` of a replayed frame is the time it was replayed (latency figures stay
meaningful); the recorded one travels in the header as ``t_acq_original_ns``.
When the publisher sends bitshuffle-LZ4 (``publisher.wire_compression``) and the file's
frames are stored in that very format (a framepipe recording), the stored chunks are read
with ``read_direct_chunk`` and sent as they are: neither decompressed nor compressed again.
With ``camera.replay_loop`` the file starts again at its end and frame ids continue
(pass p publishes id + p × (largest id + 1)), so every id stays unique in the ledgers.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.cameras.base import Camera, Pacer
from framepipe.config import CameraConfig
from framepipe.core.errors import CameraError
from framepipe.core.frame import FRAME_DTYPES, Frame, chunk_frame
from framepipe.storage.h5file import FRAME_FIELDS, MISSING_FIELD, attr_value, open_for_reading

log = logging.getLogger("framepipe.replay")

FRAMES, IDS, TIMES = "entry/data/frames", "entry/data/frame_id", "entry/data/t_acq_ns"


#: HDF5's registered id of the bitshuffle filter (hdf5plugin.BSHUF_ID)
_BSHUF_ID = 32008
#: its compression option: 2 = LZ4
_BSHUF_LZ4 = 2


def _stores_wire_chunks(frames: Any) -> bool:
    """True when a frames dataset's chunks are exactly wire chunks: one frame per chunk,
    bitshuffle with LZ4 as the only filter, default block size (the recorder's layout)."""
    if frames.chunks != (1, *frames.shape[1:]):
        return False
    plist = frames.id.get_create_plist()
    if plist.get_nfilters() != 1:
        return False
    filter_id, _, values, _ = plist.get_filter(0)
    # cd_values: (major, minor, element size, block size (0: default), compression)
    return filter_id == _BSHUF_ID and len(values) >= 5 and values[3] == 0 and values[4] == _BSHUF_LZ4


class ReplayCamera(Camera):
    """Frames of a framepipe HDF5 file, published again."""

    def __init__(self, cfg: CameraConfig):
        self.cfg = cfg
        self.path = Path(cfg.path or "")
        self.frames_lost = 0
        self._h5: Any = None
        self._frames: Any = None
        self._ids = np.zeros(0, np.int64)
        self._times = np.zeros(0, np.int64)
        self._n = 0
        self._fields: dict[str, np.ndarray] = {}
        self._row = 0
        self._pass = 0
        self._delivered = 0
        self._span = 1
        self._pass_offset_s = 0.0
        self._pacer = Pacer()
        self._meta: dict[str, Any] = {}
        #: frames are read as the stored bitshuffle-LZ4 chunks and sent as they are
        self._direct = False

    def open(self) -> None:
        import hdf5plugin  # noqa: F401  (registers the compression filters the recorder may have used)

        where = f"replay {self.path}"
        if not self.path.is_file():
            raise CameraError(f"{where}: no such file")
        try:
            self._h5, closed_cleanly = open_for_reading(self.path)
        except OSError as e:
            raise CameraError(f"{where}: not an HDF5 file h5py can open ({e})") from e
        if not closed_cleanly:
            log.warning("%s: not closed cleanly (recorder writing, or killed): replaying its complete rows", where)
        try:
            for name in (FRAMES, IDS, TIMES):
                if name not in self._h5:
                    raise CameraError(f"{where}: no dataset /{name} (is it a framepipe recording?)")
            frames = self._h5[FRAMES]
            if frames.dtype.name not in FRAME_DTYPES or frames.ndim not in (3, 4):
                raise CameraError(
                    f"{where}: /{FRAMES} holds {frames.dtype}{frames.shape[1:]}; only uint8/uint16 frames "
                    "(H, W) or (H, W, 3) can be replayed (a results file cannot)"
                )
            self._ids = np.asarray(self._h5[IDS][:], np.int64)
            self._times = np.asarray(self._h5[TIMES][:], np.int64)
            # a file still being written may have one column a row ahead: replay the rows all have
            self._n = min(frames.shape[0], len(self._ids), len(self._times))
            if self._n == 0:
                raise CameraError(f"{where}: the file holds no frames")
            self._frames = frames
            # the recording camera's per-frame fields (hardware counter, timestamp) go out again
            self._fields = {
                name: np.asarray(self._h5[f"entry/data/{name}"][: self._n], np.int64)
                for name in FRAME_FIELDS
                if f"entry/data/{name}" in self._h5
            }
        except CameraError:
            self.close()
            raise
        except (OSError, KeyError) as e:
            self.close()
            raise CameraError(f"{where}: cannot read: {e}") from e
        self._direct = self.chunks_wanted and _stores_wire_chunks(self._frames)
        self._span = int(self._ids[: self._n].max()) + 1
        self._row = self._pass = self._delivered = 0
        self._pass_offset_s = 0.0
        self._pacer.restart()
        original = {}
        cam = self._h5.get("entry/instrument/camera")
        if cam is not None:
            original = {f"original_{k}": attr_value(v) for k, v in cam.attrs.items() if k != "NX_class"}
        self._meta = {
            "source": "replay",
            "model": "framepipe replay",
            "replay_of": str(self.path.resolve()),
            "frames_in_file": self._n,
            "replay_pace": self.cfg.replay_pace,
            "replay_loop": self.cfg.replay_loop,
            "fps": self.cfg.fps,
            **original,
        }
        if self._direct:
            self._meta["stored_chunks_sent"] = True  # read_direct_chunk, sent compressed as stored
        if self._fields:
            self._meta["frame_fields"] = list(self._fields)

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def _due_s(self, row: int) -> float | None:
        """Seconds after the first frame this one is due, or None for as fast as possible."""
        if self.cfg.replay_pace == "original":
            return self._pass_offset_s + max(0.0, (int(self._times[row]) - int(self._times[0])) / 1e9)
        if self.cfg.fps > 0:
            return self._delivered / self.cfg.fps
        return None

    def grab(self, timeout_s: float) -> Frame | None:
        if self._frames is None:
            raise CameraError(f"replay {self.path}: grab before open")
        if self.cfg.count and self._delivered >= self.cfg.count:
            return None
        if self._row >= self._n:
            if not self.cfg.replay_loop:
                return None
            if self.cfg.replay_pace == "original":
                # the next pass starts one typical interval after the last frame
                step = float(np.median(np.diff(self._times[: self._n]))) / 1e9 if self._n > 1 else 0.0
                self._pass_offset_s += (int(self._times[self._n - 1]) - int(self._times[0])) / 1e9 + max(step, 0.0)
            self._row = 0
            self._pass += 1
        row = self._row
        due = self._due_s(row)
        if due is not None:
            self._pacer.wait_until(due)
        frame_id = int(self._ids[row]) + self._pass * self._span
        chunk = None
        try:
            if self._direct:
                mask, chunk = self._frames.id.read_direct_chunk((row,) + (0,) * (self._frames.ndim - 1))
                if mask:  # the filter was skipped for this chunk: it holds raw pixels
                    chunk = None
            if chunk is None:
                array = self._frames[row]
        except OSError as e:
            raise CameraError(f"replay {self.path}: cannot read frame row {row}: {e}") from e
        self._row = row + 1
        self._delivered += 1
        extra = {"t_acq_original_ns": int(self._times[row])}
        for name, column in self._fields.items():
            if row < len(column) and column[row] != MISSING_FIELD:
                extra[name] = int(column[row])
        if chunk is not None:
            shape, dtype = self._frames.shape[1:], self._frames.dtype
            return chunk_frame(frame_id, chunk, shape, dtype, time.time_ns(), extra)
        return Frame(frame_id=frame_id, array=np.ascontiguousarray(array), t_acq_ns=time.time_ns(), extra=extra)

    def close(self) -> None:
        h5, self._h5 = self._h5, None
        self._frames = None
        if h5 is not None:
            h5.close()
