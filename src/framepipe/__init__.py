"""framepipe: a distributed ZeroMQ image-processing pipeline for lab cameras."""

from __future__ import annotations

__version__ = "0.1.0"

from framepipe.config import Config, load_config
from framepipe.core.errors import (
    CameraError,
    ConfigError,
    FramepipeError,
    ProtocolError,
    RecorderError,
    SyncError,
)
from framepipe.core.frame import Frame

__all__ = [
    "CameraError",
    "Config",
    "ConfigError",
    "Frame",
    "FramepipeError",
    "ProtocolError",
    "RecorderError",
    "SyncError",
    "__version__",
    "load_config",
]
