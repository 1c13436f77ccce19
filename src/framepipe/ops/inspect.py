"""``framepipe inspect FILE [--png OUT] [--verify]``: what a recorded HDF5 file holds, at a glance.

Prints frames, shape, dtype, compression and its ratio, frame ids and the missing ones,
effective frame rate (from the acquisition timestamps), the ledger's counts and the
``complete`` flag. ``--png OUT`` writes a contact sheet: a few frames, each beside its FFT
power on a log scale (for a results file, the stored spectra on a log scale), drawn by
the live view's own code (:mod:`framepipe.subscribers.viewer.images`: the same contrast,
spectrum and PNG encoding as ``framepipe view``).

Reads with plain h5py + hdf5plugin, like any other reader. A file whose writer is still
running or was killed is opened in SWMR mode and reported as not finished.

Safe on any file: HDF5 can hang for minutes or crash on a damaged one, so the command reads
in a child process that it kills after ``--timeout`` seconds without progress
(:mod:`framepipe.ops.bounded_call`). Whatever is wrong is one line per problem on stderr,
never a traceback. By default only the headers are read (the chunk index says nothing of
the chunks' bytes); ``--verify`` reads and decompresses every chunk under ``/entry`` and
names each one that fails by its frame index. Exit code: 0 for a readable file whose
ledger says complete, 1 for an incomplete or damaged one, 2 for a usage error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from framepipe.core.errors import FramepipeError
from framepipe.ops.bounded_call import CallDied, CallFailed, CallTimedOut, Progress, call_bounded
from framepipe.ops.sheet_labels import label_strip
from framepipe.processing.fft import spectrum
from framepipe.storage.h5file import attr_value, open_for_reading
from framepipe.subscribers.viewer.images import (
    SPECTRUM_CONTRAST,
    auto_contrast,
    display_step,
    encode_png,
    frame_image,
    spectrum_levels,
)
from framepipe.wire.protocol import to_ranges

FILTER_NAMES = {
    str(hdf5plugin.BSHUF_ID): "bitshuffle-lz4",
    str(hdf5plugin.BLOSC_ID): "blosc",
    "gzip": "gzip",
    "lzf": "lzf",
    "shuffle": "shuffle",
}
#: tiles in the contact sheet are at most this many pixels on a side
TILE = 256
#: seconds without progress before the reading child is killed (``--timeout``)
DEFAULT_TIMEOUT_S = 20.0
#: unreadable chunks listed one per line per dataset; the rest are counted in one more line
MAX_CHUNK_LINES = 20


class InspectError(FramepipeError):
    """A file that cannot be inspected (not HDF5, not a framepipe layout, nothing to draw)."""


class InspectUsageError(InspectError):
    """A command line that names no file to inspect, or a bad option: a usage error."""

    exit_code = 2


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class Problems:
    """What is wrong with one file: one line each, every line naming the file."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        self.lines.append(f"{self.path}: {text}")

    @contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """A block of reads: whatever a damaged file makes it raise becomes one line naming
        ``what``, and the caller goes on with the next block."""
        try:
            yield
        except Exception as e:  # h5py raises OSError, RuntimeError, KeyError, ValueError, TypeError
            self.add(f"{what}: {_one_line(e)}")


def _plain(value: Any) -> Any:
    """An attribute as a JSON value (its text if it has no JSON form)."""
    value = attr_value(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _open(path: Path) -> tuple[h5py.File, bool]:
    """Open read-only; a file still marked open for writing (live or killed writer) via SWMR."""
    if not path.is_file():
        raise InspectUsageError(f"{path}: no such file")
    try:
        return open_for_reading(path)
    except OSError as e:
        raise InspectError(f"{path}: cannot open as HDF5: {_one_line(e)}") from None


def _ranges_text(ids: list[int], limit: int = 12) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in to_ranges(ids)]
    more = f" … (+{len(parts) - limit} ranges)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


# ---------------------------------------------------------------- headers


def _headers(f: h5py.File, path: Path, closed_cleanly: bool, problems: Problems) -> dict[str, Any]:
    """The summary from attributes and the small columns; every block read on its own, so
    one damaged object costs its own line, not the rest."""
    out: dict[str, Any] = {"file": str(path), "opened": True, "finished": False, "frames": 0, "complete": False}
    entry: h5py.Group | None = None
    with problems.reading("/entry"):
        if "entry" not in f:
            problems.add("not a framepipe file (no /entry)")
            return out
        entry = f["entry"]
    if entry is None:
        return out
    for key in ("run", "run_id", "stream", "file_index", "start_time", "end_time"):
        with problems.reading(f"/entry attribute {key}"):
            if key in entry.attrs:
                out[key] = _plain(entry.attrs[key])

    ids: np.ndarray | None = None
    with problems.reading("/entry/data/frame_id"):
        if "data/frame_id" not in entry:
            problems.add("not a framepipe file (no /entry/data/frame_id)")
        else:
            column = entry["data/frame_id"]
            if column.dtype.kind not in "iu" or column.ndim != 1:
                problems.add(f"/entry/data/frame_id holds {column.dtype} {column.shape}, not one integer id a frame")
            else:
                ids = column[:]
                out["frames"] = len(ids)
    _frames(entry, ids, out, problems)
    if ids is not None and len(ids):
        out["frame_ids"] = f"{int(ids.min())}-{int(ids.max())}"
        with problems.reading("/entry/data/t_acq_ns"):
            if "data/t_acq_ns" not in entry:
                problems.add("no /entry/data/t_acq_ns (acquisition times)")
            else:
                t_acq = entry["data/t_acq_ns"][: len(ids)].astype(np.int64)
                span = (int(t_acq.max()) - int(t_acq.min())) / 1e9
                out["effective_fps"] = round((len(ids) - 1) / span, 2) if span > 0 else None

    has_ledger = _ledger(entry, out, problems)
    out["finished"] = closed_cleanly and has_ledger
    with problems.reading("/entry/instrument/camera"):
        cam = entry.get("instrument/camera")
        if cam is not None:
            out["camera"] = {k: _plain(v) for k, v in cam.attrs.items() if k != "NX_class"}
    return out


def _frames(entry: h5py.Group, ids: np.ndarray | None, out: dict[str, Any], problems: Problems) -> None:
    with problems.reading("/entry/data attribute outputs"):
        if "data" in entry and "outputs" in entry["data"].attrs:  # a results file: the processor's outputs
            out["outputs"] = json.loads(_plain(entry["data"].attrs["outputs"]))
    with problems.reading("/entry/data/frames"):
        if "data/frames" not in entry:
            # a results file whose outputs are all scalars has columns, no frames
            if ids is not None and len(ids) and not any(o.get("shape") for o in out.get("outputs", [{"shape": [1]}])):
                return
            if ids is not None and len(ids):
                problems.add("no /entry/data/frames, yet frame ids are listed")
            return
        frames = entry["data/frames"]
        n = min(len(frames), len(ids)) if ids is not None else len(frames)
        out["frames"] = int(n)
        out["shape"] = list(frames.shape[1:])
        out["dtype"] = str(frames.dtype)
        out["compression"] = [FILTER_NAMES.get(k, k) for k in frames._filters] or ["none"]
        stored = frames.id.get_storage_size()
        raw = n * frames.dtype.itemsize * int(np.prod(frames.shape[1:]))
        out["stored_bytes"] = int(stored)
        out["compression_ratio"] = round(raw / stored, 3) if stored else None


def _ledger(entry: h5py.Group, out: dict[str, Any], problems: Problems) -> bool:
    """Reads the ledger into ``out``; whether there is one (no ledger: never complete)."""
    out["missing_ids"] = None
    found = False
    with problems.reading("/entry/ledger"):
        ledger = entry.get("ledger")
        if ledger is None:
            return False
        found = True
        out["ledger"] = {k: _plain(v) for k, v in ledger.attrs.items() if k != "NX_class"}
        if "complete" not in ledger.attrs:
            problems.add("/entry/ledger has no `complete` attribute")
        out["complete"] = bool(ledger.attrs.get("complete", False))
        with problems.reading("/entry/ledger/missing_ids"):
            if "missing_ids" not in ledger:
                problems.add("/entry/ledger has no missing_ids")
            elif ledger["missing_ids"].dtype.kind not in "iu":
                problems.add(f"/entry/ledger/missing_ids holds {ledger['missing_ids'].dtype}, not integer ids")
            else:
                out["missing_ids"] = [int(i) for i in ledger["missing_ids"][:].ravel()]
                if out["complete"] and out["missing_ids"]:
                    problems.add(f"/entry/ledger says complete, yet lists {len(out['missing_ids'])} missing ids")
        with problems.reading("/entry/ledger/failed_ids"):
            if "failed_ids" in ledger:  # results: frames the processor failed on
                out["failed_ids"] = [int(i) for i in ledger["failed_ids"][:].ravel()]
        with problems.reading("/entry/ledger/damaged_ids"):
            if "damaged_ids" in ledger:  # read from a shared-memory slot rewritten meanwhile
                out["damaged_ids"] = [int(i) for i in ledger["damaged_ids"][:].ravel()]
    return found


# ---------------------------------------------------------------- every chunk


def verify_chunks(
    f: h5py.File,
    problems: Problems,
    progress: Progress | None = None,
    ids: np.ndarray | None = None,
    skip: frozenset[tuple[str, int]] = frozenset(),
) -> dict[str, Any]:
    """Read (and so decompress) every chunk of every dataset under /entry.

    A chunk that fails is one line, by frame index (and frame id, given ``ids``) under
    /entry/data. ``skip``: chunks (dataset, number) known to crash the reader: counted as
    unreadable, not read again. Each chunk is announced to ``progress`` before it is read,
    so a crash names it. A chunk stored without a filter has no checksum: damage to it
    reads back as wrong values and cannot be seen here; such datasets are ``unchecked``.
    """
    progress = progress or Progress(None)
    names: list[str] = []
    with problems.reading("/entry (listing its datasets)"):
        f["entry"].visititems(lambda _, obj: names.append(obj.name) if isinstance(obj, h5py.Dataset) else None)
    read = unreadable = 0
    unchecked: list[str] = []
    for name in names:
        with problems.reading(name):
            dset = f[name]
            if dset.chunks is None:  # contiguous or compact: small (the ledger's ids)
                if (name, -1) in skip:
                    unreadable += 1
                    continue
                progress.at({"phase": "verify", "dataset": name, "chunk": -1, "what": "its data"})
                dset[()]
                read += 1
                continue
            if not dset._filters:
                unchecked.append(name)
            failed = 0
            for number, chunk in enumerate(dset.iter_chunks()):
                if (name, number) in skip:
                    unreadable += 1
                    continue
                progress.at({"phase": "verify", "dataset": name, "chunk": number, "what": _where(name, chunk, ids)})
                try:
                    dset[chunk]
                except Exception as e:  # a chunk that does not decompress: OSError, sometimes others
                    failed += 1
                    if failed <= MAX_CHUNK_LINES:
                        problems.add(f"{name}: {_where(name, chunk, ids)} cannot be read: {_one_line(e)}")
                else:
                    read += 1
            if failed > MAX_CHUNK_LINES:
                problems.add(f"{name}: {failed - MAX_CHUNK_LINES} more unreadable chunks")
            unreadable += failed
    return {"verified": True, "datasets": len(names), "read": read, "unreadable": unreadable, "unchecked": unchecked}


def _where(name: str, chunk: tuple[slice, ...], ids: np.ndarray | None) -> str:
    """A chunk by its rows: frame indexes under /entry/data, row numbers elsewhere."""
    if not chunk:
        return "its data"
    first, last = chunk[0].start, chunk[0].stop - 1
    if not name.startswith("/entry/data/"):
        return f"row {first}" if first == last else f"rows {first}-{last}"
    if first != last:
        return f"frame indexes {first}-{last}"
    known = ids is not None and first < len(ids)
    return f"frame index {first}" + (f" (frame id {int(ids[first])})" if known and ids is not None else "")


# ---------------------------------------------------------------- one file, whole


def _examine(
    path: Path,
    *,
    verify: bool,
    png: str | None,
    progress: Progress | None = None,
    skip: frozenset[tuple[str, int]] = frozenset(),
) -> dict[str, Any]:
    """Everything ``inspect`` says of one file, as a JSON-able dict with a ``problems`` list."""
    progress = progress or Progress(None)
    problems = Problems(path)
    progress.at({"phase": "open", "what": "the file's superblock"})
    try:
        f, closed_cleanly = _open(path)
    except InspectUsageError:
        raise
    except InspectError as e:
        return {"file": str(path), "opened": False, "finished": False, "complete": False, "problems": [str(e)]}
    try:
        progress.at({"phase": "headers", "what": "the headers"})
        out = _headers(f, path, closed_cleanly, problems)
        if verify:
            ids = None
            with problems.reading("/entry/data/frame_id"):
                column = f.get("entry/data/frame_id")
                if column is not None and column.dtype.kind in "iu":
                    ids = column[:]
            out["chunks"] = verify_chunks(f, problems, progress, ids, skip)
        else:
            out["chunks"] = {"verified": False}
        if png:
            try:
                out["contact_sheet"] = {"path": png, "frames": _draw(f, png, progress=progress)}
            except Exception as e:  # whatever a damaged frame raises: one line
                problems.add(f"--png {png}: not written: {_one_line(e)}")
    finally:
        with problems.reading("closing"):
            f.close()
    out["problems"] = problems.lines
    return out


def summarize(path: str | Path, *, verify: bool = False) -> dict[str, Any]:
    """The facts ``inspect`` prints, as a dict (JSON-serialisable), read in this process."""
    return _examine(Path(path), verify=verify, png=None)


def _job(progress: Progress, path: str, png: str | None, verify: bool, skip: list[list[Any]]) -> dict[str, Any]:
    """What the bounded child runs."""
    known = frozenset((str(name), int(number)) for name, number in skip)
    return _examine(Path(path), verify=verify, png=png, progress=progress, skip=known)


def read_bounded(path: str, png: str | None, verify: bool, timeout_s: float) -> dict[str, Any]:
    """:func:`_examine` in a child process that is killed after ``timeout_s`` s without progress.

    A chunk that crashes the reader (a decompressor fed corrupt bytes can segfault) is one
    problem line, and a new child goes on past it, up to ``MAX_CHUNK_LINES`` such chunks;
    a crash while drawing costs the contact sheet only. Any other crash or a timeout is one
    line for the whole file.
    """
    skip: list[list[Any]] = []
    crashes: list[str] = []
    draw = png
    while True:
        try:
            s: dict[str, Any] = call_bounded(_job, (path, draw, verify, skip), timeout_s)
        except CallTimedOut as e:
            at = f": stuck reading {_at(e.where)}" if e.where and e.where.get("phase") != "open" else ""
            return _unreadable(path, [*crashes, f"{path}: could not be read within {timeout_s:g} s (damaged?){at}"])
        except CallDied as e:
            where = e.where or {}
            if where.get("phase") == "verify" and len(skip) < MAX_CHUNK_LINES:
                skip.append([where["dataset"], where["chunk"]])
                crashes.append(f"{path}: {_at(where)} cannot be read: it crashes the HDF5 reader ({e})")
                continue
            if where.get("phase") == "png" and draw:
                crashes.append(f"{path}: --png {png}: not written: the HDF5 reader {e} reading {where['what']}")
                draw = None
                continue
            at = f" reading {_at(where)}" if where else ""
            return _unreadable(path, [*crashes, f"{path}: the HDF5 reader {e}{at} (damaged?)"])
        except CallFailed as e:
            return _unreadable(path, [*crashes, f"{path}: {e}"])
        s["problems"] = crashes + s["problems"]
        return s


def _at(where: dict[str, Any]) -> str:
    return f"{where['dataset']}: {where['what']}" if "dataset" in where else str(where.get("what", "?"))


def _unreadable(path: str, lines: list[str]) -> dict[str, Any]:
    return {"file": path, "opened": False, "finished": False, "complete": False, "problems": lines}


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"{s['file']}"]
    if not s["finished"]:
        lines.append(
            "  NOT FINISHED: no ledger (recording still running, or its writer was killed; "
            "`h5clear -s FILE` clears the open-for-writing flag of a killed writer's file)"
        )
    for key in ("run", "run_id", "stream", "file_index", "start_time", "end_time"):
        if s.get(key) not in (None, ""):
            lines.append(f"  {key:<18}{s[key]}")
    lines.append(f"  {'frames':<18}{s.get('frames', 0)}")
    if "shape" in s:
        lines.append(f"  {'shape':<18}{' × '.join(map(str, s['shape']))}  {s['dtype']}")
        ratio = s["compression_ratio"]
        lines.append(
            f"  {'compression':<18}{', '.join(s['compression'])}  ratio {ratio if ratio else '-'}"
            f"  ({s['stored_bytes'] / 1e6:.1f} MB stored)"
        )
    wire = (s.get("ledger") or {}).get("wire_encoding")
    if wire:
        led = s["ledger"]
        lines.append(
            f"  {'on the wire':<18}{wire}  ratio {led.get('wire_ratio', '-')}"
            f"  ({led.get('chunks_as_received', 0)} chunks stored as received)"
        )
    if "frame_ids" in s:
        lines.append(f"  {'frame ids':<18}{s['frame_ids']}")
        fps = s.get("effective_fps")
        lines.append(f"  {'effective fps':<18}{fps if fps is not None else '-'}  (from t_acq_ns)")
    for o in s.get("outputs", []):
        kind = "column" if not o["shape"] else "×".join(map(str, o["shape"]))
        lines.append(f"  {'output':<18}{o['name']}  {o['dtype']} {kind}")
    if s.get("failed_ids"):
        failed = s["failed_ids"]
        lines.append(f"  {'failed ids':<18}{len(failed)}: {_ranges_text(failed)}  (the processor raised)")
    if s.get("damaged_ids"):
        damaged = s["damaged_ids"]
        lines.append(
            f"  {'damaged ids':<18}{len(damaged)}: {_ranges_text(damaged)}  (read from a slot rewritten meanwhile)"
        )
    missing = s.get("missing_ids")
    if missing is None:
        lines.append(f"  {'missing ids':<18}unknown (no ledger)")
    else:
        lines.append(f"  {'missing ids':<18}{len(missing)}" + (f": {_ranges_text(missing)}" if missing else ""))
    led = s.get("ledger", {})
    keys = ("received", "written", "dropped_upstream", "camera_lost", "rejected", "duplicates", "end_reason", "error")
    counts = ", ".join(f"{k} {led[k]}" for k in keys if led.get(k) not in (None, ""))
    if counts:
        lines.append(f"  {'ledger':<18}{counts}")
    lines.append(f"  {'complete':<18}{str(s['complete']).lower()}")
    if s.get("camera"):
        lines.append(f"  {'camera':<18}{json.dumps(s['camera'])}")
    lines.append(f"  {'chunks':<18}{_chunks_text(s.get('chunks', {}))}")
    if s.get("contact_sheet"):
        sheet = s["contact_sheet"]
        lines.append(f"  {'contact sheet':<18}{sheet['path']} ({sheet['frames']} frame(s))")
    if s.get("problems"):
        lines.append(f"  {'problems':<18}{len(s['problems'])} (one line each on stderr)")
    return "\n".join(lines)


def _chunks_text(c: dict[str, Any]) -> str:
    if not c.get("verified"):
        return "not read; --verify reads every chunk"
    text = f"{c['read']} read in {c['datasets']} datasets, {c['unreadable']} unreadable"
    if c["unchecked"]:
        text += f"; no filter, so no check of the bytes: {', '.join(c['unchecked'])}"
    return text


# ---------------------------------------------------------------- contact sheet


def contact_sheet(path: str | Path, out: str | Path, count: int = 4) -> int:
    """Write ``count`` evenly spaced frames, each beside its log FFT power; returns tiles drawn."""
    f, _ = _open(Path(path))
    with f:
        try:
            return _draw(f, out, count)
        except InspectError as e:
            raise InspectError(f"{path}: {e}") from None


def _draw(f: h5py.File, out: str | Path, count: int = 4, progress: Progress | None = None) -> int:
    progress = progress or Progress(None)
    if "entry/data/frames" not in f:
        raise InspectError("no frames to draw")
    frames = f["entry/data/frames"]
    n = min(len(frames), len(f["entry/data/frame_id"]))
    if n == 0:
        raise InspectError("the file holds no frames")
    results = attr_value(f["entry"].attrs.get("stream", "")) == "results"
    ids = f["entry/data/frame_id"]
    rows = []
    for i in np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int)):
        progress.at({"phase": "png", "what": f"frame index {i}"})
        try:
            img = np.asarray(frames[int(i)])
        except OSError as e:
            raise InspectError(f"frame index {i} cannot be read: {_one_line(e)}") from None
        if img.ndim == 3:
            img = img[..., 0]
        if np.iscomplexobj(img):
            img = np.abs(img) ** 2
        if results:
            # as stored: the file does not say which representation, so a plain log scale
            step = display_step(img.shape, TILE)
            tiles = [auto_contrast(np.log1p(np.abs(img[::step, ::step])), SPECTRUM_CONTRAST)]
        else:
            # the spectrum of the whole frame, then subsampled: as a worker's result is shown
            half = spectrum(img, "power")
            tiles = [frame_image(img, max_side=TILE), spectrum_levels(half, width=img.shape[1], max_side=TILE)]
        gap = np.full((tiles[0].shape[0], 4), 255, np.uint8)
        row = np.hstack([t if j == 0 else np.hstack([gap, t]) for j, t in enumerate(tiles)])
        # which frame this is: its id, above the row
        rows.append(np.vstack([label_strip(f"id {int(ids[int(i)])}", row.shape[1]), row]))
    width = max(r.shape[1] for r in rows)
    sheet = []
    for r in rows:
        sheet.append(np.pad(r, ((0, 4), (0, width - r.shape[1])), constant_values=255))
    Path(out).write_bytes(encode_png(np.vstack(sheet)))
    return len(rows)


# ---------------------------------------------------------------- the command


def main(
    path: str, png: str | None = None, as_json: bool = False, verify: bool = False, timeout_s: float | None = None
) -> int:
    """The ``framepipe inspect`` command: 0 readable and complete, 1 incomplete or damaged."""
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    if not timeout_s > 0:
        raise InspectUsageError(f"--timeout must be more than 0 s, not {timeout_s:g}")
    if not Path(path).exists():
        raise InspectUsageError(f"{path}: no such file")
    if not Path(path).is_file():
        raise InspectUsageError(f"{path}: not a file")
    s = read_bounded(path, png, verify, timeout_s)
    if as_json:
        print(json.dumps(s))
    elif s["opened"]:
        print(format_summary(s))
    for line in s["problems"]:
        print(line, file=sys.stderr)
    sound = s["opened"] and not s["problems"] and s["finished"] and s["complete"]
    return 0 if sound else 1
