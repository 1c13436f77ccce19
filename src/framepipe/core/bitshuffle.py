"""The bitshuffle-LZ4 chunk: HDF5 filter 32008's stored bytes, made and read here.

One format serves the wire and the file: a publisher compresses a frame once, the frames
recorder stores the received bytes as the chunk (``H5Dwrite_chunk``), and workers and
viewers decode them. The chunk is exactly what the HDF5 filter stores (hdf5plugin's
``Bitshuffle(nelems=0, cname="lz4")``)::

    [ uint64 BE: decoded bytes ][ uint32 BE: block size in bytes ]
    [ per block: uint32 BE compressed length, LZ4 block ] ... [ leftover bytes, raw ]

The codec is the very library hdf5plugin ships as the filter plugin (``libh5bshuf``, its C
API called through ctypes, which releases the GIL), so the bytes are those a reader's
filter expects. :func:`decode` is safe on hostile input: the declared size must equal the
shape's before anything is decompressed, the block headers are walked first so no block
can point past the payload, and each block is decompressed by ``LZ4_decompress_safe``
into a buffer of its exact size. hdf5plugin is found on first use, not at import.
"""

from __future__ import annotations

import ctypes
import math
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

NAME = "bitshuffle-lz4"
#: the 12-byte header every chunk starts with
HEADER = struct.Struct(">QI")
#: bitshuffle works on groups of 8 elements; blocks are multiples of this
BLOCK_MULT = 8
#: the largest block size (bytes) a received chunk may declare: more would only be a lie
#: meant to make the decoder allocate (the default is 8 KiB; the filter allows up to 64 Ki elements)
MAX_BLOCK_BYTES = 1 << 20


class ChunkError(ValueError):
    """A chunk that is not what it claims to be (size, block structure, LZ4 data)."""


class _Lib:
    """The libh5bshuf functions, loaded once."""

    def __init__(self) -> None:
        import hdf5plugin

        lib = ctypes.CDLL(os.path.join(hdf5plugin.PLUGIN_PATH, "libh5bshuf.so"))
        self.compress = lib.bshuf_compress_lz4
        self.compress.restype = ctypes.c_int64
        self.compress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
        self.decompress = lib.bshuf_decompress_lz4
        self.decompress.restype = ctypes.c_int64
        self.decompress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
        self.bound = lib.bshuf_compress_lz4_bound
        self.bound.restype = ctypes.c_size_t
        self.bound.argtypes = [ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t]
        self.default_block = lib.bshuf_default_block_size
        self.default_block.restype = ctypes.c_size_t
        self.default_block.argtypes = [ctypes.c_size_t]


_lib: _Lib | None = None


def _library() -> _Lib:
    global _lib
    if _lib is None:
        _lib = _Lib()
    return _lib


def available() -> bool:
    """True when hdf5plugin's bitshuffle library (and the symbols we call) can be loaded."""
    try:
        _library()
    except (ImportError, OSError, AttributeError):
        return False
    return True


def encode(array: np.ndarray) -> np.ndarray:
    """The chunk of ``array`` (C-contiguous), as a uint8 array (a buffer, sent without a copy)."""
    lib = _library()
    array = np.ascontiguousarray(array)
    size, itemsize = array.size, array.itemsize
    block = lib.default_block(itemsize)
    out = np.empty(HEADER.size + lib.bound(size, itemsize, block), np.uint8)
    out[: HEADER.size] = np.frombuffer(HEADER.pack(array.nbytes, block * itemsize), np.uint8)
    n = lib.compress(array.ctypes.data, out.ctypes.data + HEADER.size, size, itemsize, block)
    if n < 0:
        raise ValueError(f"bitshuffle-lz4 failed with code {n}")
    return out[: HEADER.size + n]


def check(chunk: memoryview, shape: Sequence[int], dtype: np.dtype[Any]) -> int:
    """Validate a chunk's structure against the shape it claims; its block size in elements.

    Cheap (a walk over the block headers, no decompression): the declared decoded size must
    be shape × itemsize, the block size a positive multiple of 8 elements, and the blocks
    must end exactly where the chunk does. Raises :class:`ChunkError`.
    """
    itemsize = dtype.itemsize
    expected = math.prod(shape) * itemsize
    if chunk.nbytes < HEADER.size:
        raise ChunkError(f"chunk of {chunk.nbytes} bytes has no header")
    decoded, block_bytes = HEADER.unpack_from(chunk)
    if decoded != expected:
        raise ChunkError(f"chunk declares {decoded} decoded bytes, shape {list(shape)} × {itemsize} is {expected}")
    if block_bytes <= 0 or block_bytes % itemsize or block_bytes > MAX_BLOCK_BYTES:
        raise ChunkError(f"chunk declares a block of {block_bytes} bytes")
    block = block_bytes // itemsize
    if block % BLOCK_MULT:
        raise ChunkError(f"chunk declares a block of {block} elements, not a multiple of {BLOCK_MULT}")
    size = expected // itemsize
    full, leftover = divmod(size, block)
    last = leftover - leftover % BLOCK_MULT
    tail = (leftover % BLOCK_MULT) * itemsize
    sizes = [block * itemsize] * full + ([last * itemsize] if last else [])
    pos, end = HEADER.size, chunk.nbytes - tail
    unpack = struct.Struct(">I").unpack_from
    for block_size in sizes:
        if pos + 4 > end:
            raise ChunkError("chunk ends inside its blocks")
        (n,) = unpack(chunk, pos)
        # LZ4's worst case: a block cannot be larger than this and decode to block_size
        if n == 0 or n > block_size + block_size // 255 + 16:
            raise ChunkError(f"chunk declares an LZ4 block of {n} bytes")
        pos += 4 + n
    if pos != end:
        raise ChunkError(f"chunk is {chunk.nbytes} bytes, its blocks account for {pos + tail}")
    return block


def decode(
    chunk: Any, shape: Sequence[int], dtype: np.dtype[Any] | str, *, out: np.ndarray | None = None
) -> np.ndarray:
    """The array a chunk holds, in ``out`` when given (C-contiguous, of that shape and dtype).

    Raises :class:`ChunkError` for a chunk that lies about its size, whose blocks do not
    add up, or whose LZ4 data does not decode — checked before and during decompression.
    """
    dtype = np.dtype(dtype)
    view = memoryview(chunk).cast("B")
    block = check(view, shape, dtype)
    if out is None:
        out = np.empty(tuple(shape), dtype)
    elif out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"out is {out.dtype}{out.shape}, the chunk holds {dtype}{tuple(shape)}")
    src = np.frombuffer(view, np.uint8)
    n = _library().decompress(src.ctypes.data + HEADER.size, out.ctypes.data, out.size, dtype.itemsize, block)
    if n != view.nbytes - HEADER.size:
        raise ChunkError(f"LZ4 data does not decode (code {n})")
    return out
