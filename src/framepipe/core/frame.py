"""The frame: one image from a camera, with the ids and timestamps that follow it everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from framepipe.core import bitshuffle

#: dtypes a frame or a result may have on the wire; anything else is rejected.
FRAME_DTYPES = ("uint8", "uint16")


@dataclasses.dataclass(slots=True)
class Frame:
    """One acquired image.

    ``frame_id`` is the camera's own counter (starting at 0 for a run): gaps in it are
    frames the camera or its driver lost. ``t_acq_ns`` is the acquisition time on the
    host clock (``time.time_ns()``), set as close to the grab as the source allows.
    ``extra`` carries source-specific per-frame fields (hardware counter and timestamp
    of a Basler camera, for example); they travel in the message header, so keep them
    small and JSON-serialisable.

    ``chunk``: the frame as a bitshuffle-LZ4 chunk (core.bitshuffle), when the source has
    it already (a replayed file, read with ``read_direct_chunk``); then ``array`` is only
    a descriptor of its shape and dtype (:func:`chunk_frame`), and :meth:`pixels` decodes.
    """

    frame_id: int
    array: np.ndarray
    t_acq_ns: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    chunk: Any = None

    def pixels(self) -> np.ndarray:
        """The frame's pixels (decoded from ``chunk`` when that is what the source gave)."""
        if self.chunk is None:
            return self.array
        return bitshuffle.decode(self.chunk, self.array.shape, self.array.dtype)


def descriptor(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A zero-byte read-only array of this shape and dtype (all zeros): what code that needs
    only an array's shape, dtype and nbytes is given for data that travels compressed."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def chunk_frame(
    frame_id: int, chunk: Any, shape: tuple[int, ...], dtype: np.dtype[Any], t_acq_ns: int, extra: dict[str, Any]
) -> Frame:
    """A frame that travels as its bitshuffle-LZ4 chunk: ``array`` is a zero-byte read-only
    descriptor of the shape and dtype (never read for pixels: :meth:`Frame.pixels` is)."""
    return Frame(frame_id=frame_id, array=descriptor(shape, dtype), t_acq_ns=t_acq_ns, extra=extra, chunk=chunk)
