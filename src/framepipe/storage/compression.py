"""Chunk compression for the recorder: the bytes HDF5's filter would have stored, made by us.

With one frame per chunk, the recorder compresses a frame itself and hands the result to
``H5Dwrite_chunk`` (h5py ``dset.id.write_direct_chunk``), so HDF5 does no more than I/O.
Readers decompress through the normal filter pipeline (h5py + ``import hdf5plugin``, or
``HDF5_PLUGIN_PATH`` for HDF5's tools); nothing about the file differs from one written
through the filter.

Where the compressors come from: the very shared libraries hdf5plugin ships as HDF5
filter plugins export their codecs' C API (``bshuf_compress_lz4`` in libh5bshuf,
``blosc_compress_ctx`` in libh5blosc), so we call those through ctypes: no extra package,
and byte-for-byte the codec version the readers' filter uses. ctypes releases the GIL
during the call. gzip is zlib's format, which is what HDF5's deflate filter stores.
If a library or symbol is missing (a future hdf5plugin), :attr:`Codec.direct` is False and
the recorder falls back to writing through HDF5's filter pipeline; the file is the same.
"""

from __future__ import annotations

import ctypes
import os
import zlib
from collections.abc import Callable
from typing import Any

import hdf5plugin
import numpy as np

from framepipe.core import bitshuffle

#: a stored chunk: any buffer (H5Dwrite_chunk takes it without a copy)
Chunk = Any

KINDS = ("none", "bitshuffle-lz4", "blosc-lz4", "gzip")


def _load(lib_name: str) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(os.path.join(hdf5plugin.PLUGIN_PATH, lib_name))
    except OSError:
        return None


def _bitshuffle_lz4() -> Callable[[np.ndarray], Chunk] | None:
    # the one implementation (core.bitshuffle), shared with the wire: a chunk received
    # compressed is byte for byte the chunk this codec would have made
    return bitshuffle.encode if bitshuffle.available() else None


def _blosc_lz4(level: int) -> Callable[[np.ndarray], Chunk] | None:
    lib = _load("libh5blosc.so")
    try:
        compress = lib.blosc_compress_ctx if lib else None
    except AttributeError:
        return None
    if compress is None:
        return None
    compress.restype = ctypes.c_int
    compress.argtypes = [
        ctypes.c_int,  # clevel
        ctypes.c_int,  # doshuffle
        ctypes.c_size_t,  # typesize
        ctypes.c_size_t,  # nbytes
        ctypes.c_void_p,  # src
        ctypes.c_void_p,  # dest
        ctypes.c_size_t,  # destsize
        ctypes.c_char_p,  # compressor
        ctypes.c_size_t,  # blocksize (0 = automatic, as the filter does)
        ctypes.c_int,  # internal threads
    ]

    def run(array: np.ndarray) -> Chunk:
        # Blosc's own header (16 bytes) makes the chunk self-describing; the HDF5 filter
        # stores exactly this buffer. Blosc never expands by more than its header.
        out = np.empty(array.nbytes + 16, np.uint8)
        n = compress(level, 1, array.itemsize, array.nbytes, array.ctypes.data, out.ctypes.data, out.size, b"lz4", 0, 1)
        if n <= 0:
            raise ValueError(f"blosc-lz4 failed with code {n}")
        return out[:n]

    return run


class Codec:
    """One compression setting: the dataset creation options, and (when possible) a chunk compressor."""

    def __init__(self, kind: str = "bitshuffle-lz4", level: int = 5):
        if kind not in KINDS:
            raise ValueError(f"unknown compression {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind = kind
        self.level = level
        self._compress: Callable[[np.ndarray], Chunk] | None
        if kind == "none":
            self._compress = lambda a: a  # the array's own buffer: no copy
        elif kind == "bitshuffle-lz4":
            self._compress = _bitshuffle_lz4()
        elif kind == "blosc-lz4":
            self._compress = _blosc_lz4(level)
        else:
            self._compress = lambda a: zlib.compress(a.data, level)

    @property
    def direct(self) -> bool:
        """True when chunks can be compressed here and written with H5Dwrite_chunk."""
        return self._compress is not None

    def dataset_options(self) -> dict[str, Any]:
        """Keyword arguments for ``create_dataset``: the filter HDF5 records for readers."""
        if self.kind == "bitshuffle-lz4":
            return dict(hdf5plugin.Bitshuffle(nelems=0, cname="lz4"))
        if self.kind == "blosc-lz4":
            return dict(hdf5plugin.Blosc(cname="lz4", clevel=self.level, shuffle=hdf5plugin.Blosc.SHUFFLE))
        if self.kind == "gzip":
            return {"compression": "gzip", "compression_opts": self.level}
        return {}

    def compress(self, array: np.ndarray) -> Chunk:
        """The stored bytes of one chunk holding exactly ``array`` (C-contiguous)."""
        if self._compress is None:
            raise RuntimeError(f"{self.kind}: no direct compressor available")
        return self._compress(np.ascontiguousarray(array))
