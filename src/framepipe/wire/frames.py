"""A received frame's pixels, decompressed into a buffer that is reused frame after frame.

A worker decodes every frame it is given; allocating 2–8 MB per frame would cost page
faults on each. :class:`FrameBuffers` keeps one buffer per (shape, dtype) — a deployment
has one or two — and :func:`frame_array` decodes into it. A raw payload is returned as its
read-only view on the message: nothing to copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framepipe.wire.protocol import Message

#: buffers kept at most (one per frame geometry; a new geometry past this evicts the oldest)
MAX_BUFFERS = 4


class FrameBuffers:
    """Decode buffers by (shape, dtype), bounded."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[tuple[int, ...], str], np.ndarray] = {}

    def get(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
        key = (shape, dtype.name)
        buffer = self._buffers.get(key)
        if buffer is None:
            if len(self._buffers) >= MAX_BUFFERS:
                del self._buffers[next(iter(self._buffers))]
            buffer = self._buffers[key] = np.empty(shape, dtype)
        return buffer


def frame_array(msg: Message, buffers: FrameBuffers) -> np.ndarray:
    """The message's array: a compressed payload decoded into the reused buffer (valid
    until the next frame of that geometry), a raw one as its view. ProtocolError
    (``corrupt_payload``) for LZ4 data that does not decode."""
    if msg.encoding is None:
        return msg.decoded()
    shape = tuple(msg.header["shape"])
    return msg.decoded(out=buffers.get(shape, np.dtype(msg.header["dtype"])))
