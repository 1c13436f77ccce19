"""The domain, with no sockets and no files: the frame, the frame ledger (id ranges and
accounting), the errors, logging, and the process-wide buffer policy (heap).

May import: nothing from framepipe (numpy and the standard library only). Everything else
builds on it.
"""

from __future__ import annotations

from framepipe.core.errors import (
    CameraError,
    ConfigError,
    FramepipeError,
    ProtocolError,
    RecorderError,
    SyncError,
)
from framepipe.core.frame import FRAME_DTYPES, Frame
from framepipe.core.ledger import IdRanges

__all__ = [
    "FRAME_DTYPES",
    "CameraError",
    "ConfigError",
    "Frame",
    "FramepipeError",
    "IdRanges",
    "ProtocolError",
    "RecorderError",
    "SyncError",
]
