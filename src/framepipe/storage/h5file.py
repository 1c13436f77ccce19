"""One HDF5 file of a stream, NeXus-style (the full description is docs/hdf5-layout.md).

::

    /entry                    NXentry   attrs: run, run_id, stream, file_index, start_time, end_time,
                                               framepipe_version, config (JSON), host, recorder
      /data                   NXdata    attrs: signal="frames"
        frames                (N, H, W) one frame per chunk, compressed (see compression.py)
        frame_id              (N,) int64
        t_acq_ns              (N,) int64  acquisition time (source host clock, ns since epoch)
        t_recv_ns             (N,) int64  arrival at the recorder (recorder host clock, ns)
        hw_frame_counter      (N,) int64  optional: the camera's own per-frame fields, when its
        hw_timestamp          (N,) int64  metadata lists them in ``frame_fields`` (-1: not sent)
        <output>              results files: one dataset per declared output of the processor
                              (N, *shape) for an array, (N,) column for a scalar; the first
                              output, when an array, is the signal: ``frames`` is that dataset
      /instrument             NXinstrument
        /camera               NXcollection  attrs: the camera's metadata
      /ledger                 NXcollection  attrs: complete, received, written, missing, failed, ...
        missing_ids           (M,) int64    written when the recording ends (finalize)
        failed_ids            (F,) int64    results files: frames the processor failed on
        damaged_ids           (D,) int64    only if any: frames read from a shared-memory slot
                                            rewritten meanwhile (possibly torn; not complete)

Crash safety and SWMR: every dataset exists before ``swmr_mode`` is switched on (with the
first frame, whose shape and dtype fix the frames dataset). Each append extends
``frames`` and the three columns together and writes the frame's chunk and the columns'
current chunks, so whatever HDF5 has put on disk has the four datasets at one length;
``flush()`` makes it visible to SWMR readers and durable against ``kill -9``. The ledger
and ``end_time`` are written by :func:`finalize` after the SWMR handle is closed (new
attributes are not SWMR-safe): a file without ``/entry/ledger`` is one whose recording
did not finish, and is never ``complete``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from framepipe.core.errors import RecorderError
from framepipe.core.outputs import Output
from framepipe.storage.compression import Chunk, Codec
from framepipe.storage.write_behind import WriteBehind

#: rows per chunk of the per-frame columns (4 KiB of int64: rewriting it per frame is cheap)
COLUMN_CHUNK = 512
COLUMNS = ("frame_id", "t_acq_ns", "t_recv_ns")
#: per-frame fields a camera may add to frame headers (``Frame.extra``), stored as int64
#: columns beside the others when its metadata lists them in ``frame_fields``
FRAME_FIELDS = ("hw_frame_counter", "hw_timestamp")
#: an optional column's value for a frame that did not carry the field
MISSING_FIELD = -1
#: format bounds: SWMR needs the 1.10 format; capping it at 1.10 keeps the files readable
#: by HDF5 1.10 tools (Debian's h5dump) and by any h5py of the last years.
LIBVER = ("v110", "v110")


def describe(e: OSError) -> str:
    """An OSError from HDF5 as one line: the OS's reason when there is one (HDF5's text spans lines)."""
    if e.errno:
        return f"{os.strerror(e.errno)} (errno {e.errno})"
    return " ".join(str(e).split())[:300]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _attr(value: Any) -> Any:
    """Attributes are scalars or strings; anything else is stored as JSON text."""
    if isinstance(value, (bool, int, float, str, np.integer, np.floating)):
        return value
    return json.dumps(value)


class FrameFile:
    """Appends frames (all of one shape and dtype) with their ids and timestamps."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        attrs: dict[str, Any] | None = None,
        codec: Codec | None = None,
        swmr: bool = True,
        direct: bool = True,
    ):
        self.path = Path(path)
        self.attrs = attrs or {}
        self.codec = codec or Codec("bitshuffle-lz4")
        self.swmr = swmr
        #: compress chunks here and write them with H5Dwrite_chunk (else HDF5's filter pipeline)
        self.direct = direct and self.codec.direct
        self.n = 0
        #: bytes of frame chunks as stored (compressed), for rotation by size and the ratio
        self.stored_bytes = 0
        self.raw_bytes = 0
        self.first_id: int | None = None
        self.last_id: int | None = None
        self._h5: h5py.File | None = None
        self._frames: h5py.Dataset | None = None
        self._columns: dict[str, h5py.Dataset] = {}
        self._colbuf = {name: np.zeros(COLUMN_CHUNK, np.int64) for name in COLUMNS}
        #: the camera's per-frame fields with a column in this file (set_camera)
        self.frame_fields: list[str] = []
        #: results files: the declared outputs (set_outputs); the first, if an array, is ``frames``
        self.outputs: list[Output] | None = None
        self._output_arrays: dict[str, h5py.Dataset] = {}
        #: the written part leaves the page cache as it reaches the disk (write_behind.py)
        self._write_behind = WriteBehind(None)
        self._geometry: tuple[tuple[int, ...], np.dtype[Any]] | None = None

    @property
    def is_open(self) -> bool:
        return self._h5 is not None

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # never overwrite: "x" fails if the file exists
            self._h5 = h5py.File(self.path, "x", libver=LIBVER)
        except FileExistsError as e:
            raise RecorderError(f"{self.path}: file exists; framepipe never overwrites data") from e
        except OSError as e:
            raise RecorderError(f"{self.path}: cannot create: {describe(e)}") from e
        self._write_behind = WriteBehind(self._descriptor())
        try:
            entry = self._h5.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.attrs["start_time"] = now_iso()
            entry.attrs["host"] = socket.gethostname()
            entry.attrs["compression"] = self.codec.kind
            entry.attrs["direct_chunk_writes"] = self.direct
            for key, value in self.attrs.items():
                entry.attrs[key] = _attr(value)
            data = entry.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            data.attrs["signal"] = "frames"
            for name in COLUMNS:
                self._add_column(data, name)
            instrument = entry.create_group("instrument")
            instrument.attrs["NX_class"] = "NXinstrument"
            instrument.create_group("camera").attrs["NX_class"] = "NXcollection"
        except OSError as e:
            self.abort()
            raise RecorderError(f"{self.path}: cannot write the layout: {describe(e)}") from e

    def _descriptor(self) -> int | None:
        """The file's descriptor under HDF5's default (sec2) driver; None under another."""
        assert self._h5 is not None
        if self._h5.driver != "sec2":
            return None
        try:
            handle = self._h5.id.get_vfd_handle()
        except (OSError, ValueError, TypeError):
            return None
        return handle if isinstance(handle, int) else None

    def _add_column(self, data: h5py.Group, name: str, dtype: str = "i8") -> None:
        self._columns[name] = data.create_dataset(
            name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(COLUMN_CHUNK,)
        )
        self._colbuf[name] = np.zeros(COLUMN_CHUNK, dtype)

    @property
    def signal(self) -> Output | None:
        """Results files: the output stored as ``frames`` (the first, when it is an array)."""
        if self.outputs and not self.outputs[0].scalar:
            return self.outputs[0]
        return None

    def set_outputs(self, outputs: list[Output]) -> None:
        """A results file: one dataset per declared output, all created now, before the first
        frame (SWMR allows no new dataset later): scalars as columns, arrays as (N, *shape)
        stacks; the first output, when an array, is ``frames`` (the signal, as the frames of
        a FFT results file always were) and its own name links to it."""
        assert self._h5 is not None
        if self._frames is not None or self.outputs is not None:
            raise RecorderError(f"{self.path}: the outputs must be declared once, before the first frame")
        data = self._h5["entry/data"]
        self.outputs = list(outputs)
        signal = self.signal
        try:
            for out in self.outputs:
                if out is signal:
                    continue
                if out.scalar:
                    self._add_column(data, out.name, out.dtype)
                else:
                    self._output_arrays[out.name] = data.create_dataset(
                        out.name,
                        shape=(0, *out.shape),
                        maxshape=(None, *out.shape),
                        dtype=out.dtype,
                        chunks=(1, *out.shape),
                        **self.codec.dataset_options(),
                    )
            data.attrs["outputs"] = json.dumps([o.to_wire() for o in self.outputs])
            if signal is not None:
                self._start(signal.shape, np.dtype(signal.dtype), link=signal.name)
            else:
                data.attrs["signal"] = self.outputs[0].name
                if self.swmr:
                    self._h5.swmr_mode = True
        except OSError as e:
            raise RecorderError(f"{self.path}: cannot create the output datasets: {describe(e)}") from e

    def set_camera(self, meta: dict[str, Any]) -> None:
        """The camera's metadata as attributes, and a column for each per-frame field it lists
        in ``frame_fields`` (before the first frame: SWMR forbids new attributes and datasets)."""
        assert self._h5 is not None
        if self._frames is not None:
            raise RecorderError(f"{self.path}: camera metadata must come before the first frame")
        cam = self._h5["entry/instrument/camera"]
        for key, value in meta.items():
            cam.attrs[str(key)] = _attr(value)
        fields = meta.get("frame_fields")
        for name in fields if isinstance(fields, list) else []:
            if name in FRAME_FIELDS and name not in self._columns:
                self._add_column(self._h5["entry/data"], name)
                self.frame_fields.append(name)

    def _start(self, shape: tuple[int, ...], dtype: np.dtype[Any], link: str | None = None) -> None:
        assert self._h5 is not None
        data = self._h5["entry/data"]
        self._frames = data.create_dataset(
            "frames",
            shape=(0, *shape),
            maxshape=(None, *shape),
            dtype=dtype,
            chunks=(1, *shape),
            **self.codec.dataset_options(),
        )
        if link is not None:
            data[link] = self._frames  # a hard link: the same dataset under the output's name
        if self.swmr:
            # every dataset exists now: from here on readers may open the file with swmr=True
            self._h5.swmr_mode = True

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """More attributes of /entry, known only after the file was opened (before the first
        frame: SWMR forbids new attributes)."""
        assert self._h5 is not None
        if self._frames is not None:
            raise RecorderError(f"{self.path}: entry attributes must come before the first frame")
        for key, value in attrs.items():
            self._h5["entry"].attrs[key] = _attr(value)

    def append(
        self,
        array: np.ndarray | None,
        *,
        frame_id: int,
        t_acq_ns: int,
        t_recv_ns: int,
        chunk: Chunk | None = None,
        fields: dict[str, Any] | None = None,
        outputs: list[np.ndarray] | None = None,
    ) -> None:
        """Append one frame; ``chunk`` is its stored form if already compressed (by ``self.codec``);
        ``fields``: the frame's header, for the camera's per-frame fields (:data:`FRAME_FIELDS`).

        A results file (:meth:`set_outputs`) takes a result's ``outputs`` in declared order;
        ``array`` is then the signal's (the first output) or None when it has no signal."""
        assert self._h5 is not None
        if self.outputs is not None:
            if outputs is None or len(outputs) != len(self.outputs):
                raise RecorderError(f"{self.path}: result {frame_id} lacks the file's {len(self.outputs)} outputs")
            array = outputs[0] if self.signal is not None else None
        try:
            n = self.n
            if array is not None:
                self._append_signal(array, frame_id, chunk)
            extra: dict[str, Any] = {}
            for out, output in zip(self.outputs or [], outputs or [], strict=False):
                if out is self.signal:
                    continue
                if output.dtype.name != out.dtype or output.shape != out.shape:
                    raise RecorderError(f"{self.path}: result {frame_id}: {out.name!r} is not {out.describe()}")
                if out.scalar:
                    extra[out.name] = output
                else:
                    dset = self._output_arrays[out.name]
                    dset.id.set_extent((n + 1, *out.shape))
                    dset[n] = output
                    self.raw_bytes += output.nbytes
            # the columns: extend together with frames and rewrite their current chunk, so the
            # datasets never disagree on length in what reaches the disk
            row, start = n % COLUMN_CHUNK, n - n % COLUMN_CHUNK
            values: dict[str, Any] = {"frame_id": frame_id, "t_acq_ns": t_acq_ns, "t_recv_ns": t_recv_ns, **extra}
            for name in self.frame_fields:
                value = (fields or {}).get(name)
                if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
                    values[name] = value
                else:
                    values[name] = MISSING_FIELD
            for name, value in values.items():
                buf = self._colbuf[name]
                if row == 0:
                    buf[:] = 0
                buf[row] = value
                col = self._columns[name]
                col.id.set_extent((n + 1,))
                col.id.write_direct_chunk((start,), buf)
            self.n = n + 1
            self._write_behind.grown()
            if self.first_id is None:
                self.first_id = frame_id
            self.last_id = frame_id
        except OSError as e:
            self._rollback()
            raise RecorderError(f"{self.path}: write failed at frame {frame_id}: {describe(e)}") from e

    def _append_signal(self, array: np.ndarray, frame_id: int, chunk: Chunk | None) -> None:
        """The frame (or a result's signal) into ``frames``, as a compressed chunk."""
        if self._frames is None:
            self._start(array.shape, array.dtype)
        assert self._frames is not None
        # the frame geometry, read from h5py once (its shape and dtype properties cost tens of µs a call)
        if self._geometry is None:
            self._geometry = (self._frames.shape[1:], self._frames.dtype)
        if self._geometry != (array.shape, array.dtype):
            raise RecorderError(
                f"{self.path}: frame {frame_id} is {array.dtype}{array.shape}, "
                f"the file holds {self._geometry[1]}{self._geometry[0]}"
            )
        n = self.n
        self._frames.id.set_extent((n + 1, *array.shape))
        if self.direct:
            if chunk is None:
                chunk = self.codec.compress(array)
            self._frames.id.write_direct_chunk((n,) + (0,) * array.ndim, chunk)
            self.stored_bytes += memoryview(chunk).nbytes
        else:
            self._frames[n] = array
            self.stored_bytes += array.nbytes  # refined from the file at close
        self.raw_bytes += array.nbytes

    def _rollback(self) -> None:
        """After a failed append, shrink every dataset back to the frames fully written."""
        for dset in (self._frames, *self._columns.values(), *self._output_arrays.values()):
            if dset is not None and dset.shape[0] != self.n:
                try:
                    dset.id.set_extent((self.n, *dset.shape[1:]))
                except OSError:
                    pass  # the close that follows reports the state of the disk

    def flush(self) -> None:
        """Make what was appended durable and visible to SWMR readers."""
        if self._h5 is None:
            return
        try:
            self._h5.flush()
        except OSError as e:
            raise RecorderError(f"{self.path}: flush failed after {self.n} frame(s): {describe(e)}") from e

    def close(self, ledger: dict[str, Any] | None = None) -> None:
        """Flush and close; with ``ledger``, then :func:`finalize` the file with it (and the end time).

        Safe twice; raises RecorderError if the flush fails (the file is closed all the same).
        """
        if self._h5 is None:
            return
        self._close()
        if ledger is not None:
            finalize(self.path, end_time=now_iso(), ledger=ledger)

    def _close(self) -> None:
        assert self._h5 is not None
        h5, self._h5 = self._h5, None
        try:
            if self._frames is not None and not self.direct:
                self.stored_bytes = self._frames.id.get_storage_size()
            h5.flush()
        except OSError as e:
            raise RecorderError(f"{self.path}: flush at close failed after {self.n} frame(s): {describe(e)}") from e
        finally:
            try:
                h5.close()
            except OSError:
                pass  # the flush error above says why; the handle is released either way

    def abort(self) -> None:
        """Close without raising (after an error)."""
        try:
            self.close()
        except RecorderError:
            pass


def finalize(path: str | os.PathLike[str], *, end_time: str, ledger: dict[str, Any]) -> None:
    """Write ``end_time`` and the ledger into a closed file (reopened without SWMR).

    ``ledger["missing_ids"]`` (and ``failed_ids``, ``damaged_ids``) become datasets; every
    other entry an attribute.
    """
    ledger = dict(ledger)
    id_lists = {"missing_ids": ledger.pop("missing_ids", [])}
    for key in ("failed_ids", "damaged_ids"):
        if ledger.get(key) is not None:
            id_lists[key] = ledger.pop(key)
    try:
        with h5py.File(path, "r+", libver=LIBVER) as h5:
            h5["entry"].attrs["end_time"] = end_time
            grp = h5.require_group("entry/ledger")
            grp.attrs["NX_class"] = "NXcollection"
            for key, value in ledger.items():
                grp.attrs[key] = _attr(value if value is not None else -1)
            for key, ids in id_lists.items():
                if key in grp:
                    del grp[key]
                grp.create_dataset(key, data=np.asarray(list(ids), dtype="i8"))
    except OSError as e:
        raise RecorderError(f"{path}: cannot write the ledger: {describe(e)}") from e


def attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain JSON-able value (h5py gives bytes and numpy scalars)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


#: words of a plain open's error that an SWMR open can get past: a writer running, or killed
SWMR_OPENS = ("open for write", "unable to lock")


def open_for_reading(path: str | os.PathLike[str]) -> tuple[h5py.File, bool]:
    """Open a recording read-only; also one still marked open for writing.

    A file whose recorder is writing, or was killed, keeps HDF5's "open for writing" flag
    and plain ``"r"`` refuses it; recorders write in SWMR mode, so it opens with
    ``swmr=True`` (the rows every column has are complete). Returns the file and whether
    it was closed cleanly. Raises the plain open's OSError if neither way works.

    Only that flag (or a writer's lock) is worth the SWMR retry: on a truncated or corrupt
    file an SWMR open retries its metadata reads for minutes before it fails.
    """
    try:
        return h5py.File(path, "r"), True
    except OSError as plain:
        if not any(sign in str(plain) for sign in SWMR_OPENS):
            raise
        try:
            return h5py.File(path, "r", swmr=True), False
        except OSError:
            raise plain from None
