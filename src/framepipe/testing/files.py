"""Reading recordings from a test while (or after) they are written: independent of the
recorder's code, plain h5py only (with hdf5plugin loaded for compressed frames)."""

from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle-lz4 frames)


def rows(path: Path) -> int:
    """Rows a reader sees now in a file being written (SWMR); 0 before its first flush."""
    try:
        with h5py.File(path, "r", swmr=True) as f:
            return len(f["entry/data/frame_id"])
    except (OSError, KeyError):
        return 0


def open_any(path: Path) -> h5py.File:
    """A recording read-only, also a killed writer's (still flagged open for writing: SWMR opens it)."""
    try:
        return h5py.File(path, "r")
    except OSError:
        return h5py.File(path, "r", swmr=True)
