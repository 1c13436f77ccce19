"""Camera sources: one module per source, chosen by ``camera.kind`` in the config."""

from __future__ import annotations

from framepipe.cameras.base import Camera
from framepipe.cameras.synthetic import SyntheticCamera, synthetic_frame
from framepipe.config import CameraConfig
from framepipe.errors import CameraError

__all__ = ["Camera", "SyntheticCamera", "open_camera", "synthetic_frame"]


def open_camera(cfg: CameraConfig) -> Camera:
    """The camera the config describes (not yet opened)."""
    if cfg.kind == "synthetic":
        return SyntheticCamera(cfg.height, cfg.width, cfg.dtype, cfg.fps, cfg.count, cfg.seed)
    raise CameraError(f"camera.kind = {cfg.kind!r} is not available in this build")
