"""Camera sources: one module per source, chosen by ``camera.kind`` in the config.

``synthetic`` needs nothing; ``basler`` needs the ``framepipe[basler]`` extra (pypylon),
``opencv`` the ``framepipe[opencv]`` extra (opencv-python-headless); ``replay`` plays an
HDF5 file recorded by framepipe. The optional libraries are imported when a camera opens,
so a machine without them runs everything else. See docs/cameras.md.

May import: ``framepipe.storage`` (replay reads recorded files), ``framepipe.config``,
``framepipe.core``. No sockets.
"""

from __future__ import annotations

from framepipe.cameras.base import Camera
from framepipe.cameras.synthetic import SyntheticCamera, synthetic_frame
from framepipe.config import CameraConfig
from framepipe.core.errors import CameraError

__all__ = ["Camera", "SyntheticCamera", "open_camera", "synthetic_frame"]


def open_camera(cfg: CameraConfig) -> Camera:
    """The camera the config describes (not yet opened)."""
    if cfg.kind == "synthetic":
        return SyntheticCamera(cfg.height, cfg.width, cfg.dtype, cfg.fps, cfg.count, cfg.seed, cfg.reel_frames)
    if cfg.kind == "basler":
        from framepipe.cameras.basler import BaslerCamera

        return BaslerCamera(cfg)
    if cfg.kind == "opencv":
        from framepipe.cameras.opencv import OpenCVCamera

        return OpenCVCamera(cfg)
    if cfg.kind == "replay":
        from framepipe.cameras.replay import ReplayCamera

        return ReplayCamera(cfg)
    raise CameraError(f"camera.kind = {cfg.kind!r} is not available in this build")
