"""``framepipe inspect FILE [--png OUT]``: what a recorded HDF5 file holds, at a glance.

Prints frames, shape, dtype, compression and its ratio, frame ids and the missing ones,
effective frame rate (from the acquisition timestamps), the ledger's counts and the
``complete`` flag. ``--png OUT`` writes a contact sheet: a few frames, each beside its FFT
power on a log scale (for a results file, the stored spectra on a log scale), drawn by
the live view's own code (:mod:`framepipe.subscribers.viewer.images`: the same contrast,
spectrum and PNG encoding as ``framepipe view``).

Reads with plain h5py + hdf5plugin, like any other reader. A file whose writer is still
running or was killed is opened in SWMR mode and reported as not finished.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from framepipe.core.errors import FramepipeError
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


class InspectError(FramepipeError):
    """A file that cannot be inspected (missing, not HDF5, not a framepipe layout)."""


def _open(path: Path) -> tuple[h5py.File, bool]:
    """Open read-only; a file still marked open for writing (live or killed writer) via SWMR."""
    if not path.is_file():
        raise InspectError(f"{path}: no such file")
    try:
        return open_for_reading(path)
    except OSError as e:
        raise InspectError(f"{path}: cannot open as HDF5: {' '.join(str(e).split())}") from None


def _ranges_text(ids: list[int], limit: int = 12) -> str:
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in to_ranges(ids)]
    more = f" … (+{len(parts) - limit} ranges)" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def summarize(path: str | Path) -> dict[str, Any]:
    """The facts ``inspect`` prints, as a dict (JSON-serialisable)."""
    path = Path(path)
    f, closed_cleanly = _open(path)
    with f:
        if "entry/data/frame_id" not in f:
            raise InspectError(f"{path}: not a framepipe file (no /entry/data/frame_id)")
        entry, data = f["entry"], f["entry/data"]
        ids = data["frame_id"][:]
        out: dict[str, Any] = {
            "file": str(path),
            "finished": closed_cleanly and "ledger" in entry,
            **{k: attr_value(entry.attrs[k]) for k in ("run", "run_id", "stream", "file_index") if k in entry.attrs},
            "start_time": attr_value(entry.attrs.get("start_time", "")),
            "end_time": attr_value(entry.attrs.get("end_time", "")),
            "frames": len(ids),
        }
        if "frames" in data:
            frames = data["frames"]
            n = min(len(frames), len(ids))
            out["frames"] = int(n)
            out["shape"] = list(frames.shape[1:])
            out["dtype"] = str(frames.dtype)
            out["compression"] = [FILTER_NAMES.get(k, k) for k in frames._filters] or ["none"]
            stored = frames.id.get_storage_size()
            raw = n * frames.dtype.itemsize * int(np.prod(frames.shape[1:]))
            out["stored_bytes"] = int(stored)
            out["compression_ratio"] = round(raw / stored, 3) if stored else None
        if "outputs" in data.attrs:  # a results file: the processor's declared outputs
            out["outputs"] = json.loads(attr_value(data.attrs["outputs"]))
        if len(ids):
            out["frame_ids"] = f"{int(ids.min())}-{int(ids.max())}"
            t_acq = data["t_acq_ns"][: len(ids)]
            span = (int(t_acq.max()) - int(t_acq.min())) / 1e9
            out["effective_fps"] = round((len(ids) - 1) / span, 2) if span > 0 else None
        ledger = entry.get("ledger")
        if ledger is not None:
            out["ledger"] = {k: attr_value(v) for k, v in ledger.attrs.items() if k != "NX_class"}
            missing = ledger["missing_ids"][:].tolist()
            out["missing_ids"] = missing
            if "failed_ids" in ledger:  # results: frames the processor failed on
                out["failed_ids"] = ledger["failed_ids"][:].tolist()
            out["complete"] = bool(ledger.attrs.get("complete", False))
        else:
            out["missing_ids"] = None
            out["complete"] = False
        cam = f.get("entry/instrument/camera")
        if cam is not None:
            out["camera"] = {k: attr_value(v) for k, v in cam.attrs.items() if k != "NX_class"}
    return out


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
    lines.append(f"  {'frames':<18}{s['frames']}")
    if "shape" in s:
        lines.append(f"  {'shape':<18}{' × '.join(map(str, s['shape']))}  {s['dtype']}")
        ratio = s["compression_ratio"]
        lines.append(
            f"  {'compression':<18}{', '.join(s['compression'])}  ratio {ratio if ratio else '-'}"
            f"  ({s['stored_bytes'] / 1e6:.1f} MB stored)"
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
    return "\n".join(lines)


# ---------------------------------------------------------------- contact sheet


def contact_sheet(path: str | Path, out: str | Path, count: int = 4) -> int:
    """Write ``count`` evenly spaced frames, each beside its log FFT power; returns tiles drawn."""
    f, _ = _open(Path(path))
    with f:
        if "entry/data/frames" not in f:
            raise InspectError(f"{path}: no frames to draw")
        frames = f["entry/data/frames"]
        n = min(len(frames), len(f["entry/data/frame_id"]))
        if n == 0:
            raise InspectError(f"{path}: the file holds no frames")
        results = attr_value(f["entry"].attrs.get("stream", "")) == "results"
        rows = []
        for i in np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int)):
            img = np.asarray(frames[int(i)])
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
            rows.append(np.hstack([t if j == 0 else np.hstack([gap, t]) for j, t in enumerate(tiles)]))
        width = max(r.shape[1] for r in rows)
        sheet = []
        for r in rows:
            sheet.append(np.pad(r, ((0, 4), (0, width - r.shape[1])), constant_values=255))
        Path(out).write_bytes(encode_png(np.vstack(sheet)))
        return len(rows)


def main(path: str, png: str | None = None, as_json: bool = False) -> int:
    """The ``framepipe inspect`` command."""
    s = summarize(path)
    print(json.dumps(s) if as_json else format_summary(s))
    if png:
        drawn = contact_sheet(path, png)
        if not as_json:
            print(f"  contact sheet     {png} ({drawn} frame(s))")
    return 0
