"""One HDF5 file of a stream, NeXus-style (see docs/hdf5-layout.md).

::

    /entry                    NXentry   attrs: run, stream, start_time, end_time, framepipe_version, config
      /data                   NXdata    attrs: signal="frames"
        frames                (N, H, W) chunked one frame per chunk
        frame_id              (N,) int64
        t_acq_ns              (N,) int64  acquisition time (host clock, ns)
        t_recv_ns             (N,) int64  arrival at the recorder (ns)
      /instrument/camera      NXcollection  attrs: the camera's metadata
      /ledger                 NXcollection  attrs: complete, received, written, missing,
                                            dropped_upstream, rejected; dataset missing_ids

Readable by plain h5py (and HDF5's tools). ``complete`` is true only when the ledger
found no frame missing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from framepipe.errors import RecorderError

GROW = 256  # rows added to every dataset at a time


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class FrameFile:
    """Appends frames (any 2-D/3-D array, all of one shape and dtype) with their ids."""

    def __init__(self, path: str | os.PathLike[str], *, attrs: dict[str, Any] | None = None):
        self.path = Path(path)
        self.attrs = attrs or {}
        self.n = 0
        self._h5: h5py.File | None = None
        self._frames: h5py.Dataset | None = None
        self._columns: dict[str, h5py.Dataset] = {}

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # never overwrite: "x" fails if the file exists
            self._h5 = h5py.File(self.path, "x", libver="latest")
        except FileExistsError as e:
            raise RecorderError(f"{self.path}: file exists; framepipe never overwrites data") from e
        except OSError as e:
            raise RecorderError(f"{self.path}: cannot create: {e}") from e
        entry = self._h5.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["start_time"] = _now()
        for key, value in self.attrs.items():
            entry.attrs[key] = value if not isinstance(value, (dict, list)) else json.dumps(value)
        data = entry.create_group("data")
        data.attrs["NX_class"] = "NXdata"
        data.attrs["signal"] = "frames"
        for name in ("frame_id", "t_acq_ns", "t_recv_ns"):
            self._columns[name] = data.create_dataset(name, shape=(0,), maxshape=(None,), dtype="i8", chunks=(4096,))

    def set_camera(self, meta: dict[str, Any]) -> None:
        assert self._h5 is not None
        cam = self._h5.require_group("entry/instrument/camera")
        cam.attrs["NX_class"] = "NXcollection"
        for key, value in meta.items():
            cam.attrs[key] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """More attributes of /entry, known only after the file was opened."""
        assert self._h5 is not None
        for key, value in attrs.items():
            self._h5["entry"].attrs[key] = value

    def append(self, array: np.ndarray, *, frame_id: int, t_acq_ns: int, t_recv_ns: int) -> None:
        assert self._h5 is not None
        try:
            if self._frames is None:
                self._frames = self._h5["entry/data"].create_dataset(
                    "frames",
                    shape=(0, *array.shape),
                    maxshape=(None, *array.shape),
                    dtype=array.dtype,
                    chunks=(1, *array.shape),
                )
            elif self._frames.shape[1:] != array.shape or self._frames.dtype != array.dtype:
                raise RecorderError(
                    f"{self.path}: frame {frame_id} is {array.dtype}{array.shape}, "
                    f"the file holds {self._frames.dtype}{self._frames.shape[1:]}"
                )
            n = self.n
            if n >= self._frames.shape[0]:
                self._frames.resize(n + GROW, axis=0)
                for col in self._columns.values():
                    col.resize(n + GROW, axis=0)
            self._frames[n] = array
            self._columns["frame_id"][n] = frame_id
            self._columns["t_acq_ns"][n] = t_acq_ns
            self._columns["t_recv_ns"][n] = t_recv_ns
            self.n = n + 1
        except OSError as e:
            raise RecorderError(f"{self.path}: write failed at frame {frame_id}: {e}") from e

    def close(self, ledger: dict[str, Any] | None = None) -> None:
        """Trim to the frames written, write the ledger, close. Safe twice."""
        if self._h5 is None:
            return
        h5, self._h5 = self._h5, None
        try:
            if self._frames is not None:
                self._frames.resize(self.n, axis=0)
            for col in self._columns.values():
                col.resize(self.n, axis=0)
            h5["entry"].attrs["end_time"] = _now()
            if ledger is not None:
                grp = h5.require_group("entry/ledger")
                grp.attrs["NX_class"] = "NXcollection"
                missing = ledger.pop("missing_ids", [])
                for key, value in ledger.items():
                    grp.attrs[key] = value if value is not None else -1
                grp.create_dataset("missing_ids", data=np.asarray(missing, dtype="i8"))
        finally:
            h5.close()
