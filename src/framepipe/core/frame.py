"""The frame: one image from a camera, with the ids and timestamps that follow it everywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

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
    """

    frame_id: int
    array: np.ndarray
    t_acq_ns: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
