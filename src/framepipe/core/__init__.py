"""The domain, with no sockets and no files: the frame, the frame ledger (id ranges and
accounting), the counter names, the errors, logging, the process-wide buffer policy (heap),
and the decisions that make "every frame exactly once" true, as plain classes with an
injected clock: the ventilator's in-flight window (``dispatch``), the sink's accounting
(``accounting``) and the recorder's series of files (``series``).

May import: nothing from framepipe (numpy and the standard library only). Everything else
builds on it.
"""

from __future__ import annotations

from framepipe.core.accounting import ResultAccounting, WorkerLiveness
from framepipe.core.counters import Count
from framepipe.core.dispatch import InFlightWindow
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
from framepipe.core.series import RecordingSeries

__all__ = [
    "FRAME_DTYPES",
    "CameraError",
    "ConfigError",
    "Count",
    "Frame",
    "FramepipeError",
    "IdRanges",
    "InFlightWindow",
    "ProtocolError",
    "RecorderError",
    "RecordingSeries",
    "ResultAccounting",
    "SyncError",
    "WorkerLiveness",
]
