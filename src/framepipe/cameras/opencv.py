"""OpenCV capture (the ``framepipe[opencv]`` extra, opencv-python-headless).

One of: a webcam index (``camera.device``), a video file (``camera.path``) or a stream URL
(``camera.url``), read with ``cv2.VideoCapture``. OpenCV fails silently (``read()`` just
returns False), so every failure is checked here: ``isOpened()`` after opening, and a
video file that ends before the frame count in its header is reported as truncated or
corrupt rather than passed off as a normal end of stream.

Colour (``camera.colour``): ``gray`` publishes luminance (H, W) uint8, which is what the
FFT workers transform anyway; ``rgb`` publishes (H, W, 3) uint8 in RGB order (OpenCV's
own order is BGR; it is converted so downstream code never has to guess).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from framepipe.cameras.base import Camera, Pacer, import_extra
from framepipe.config import CameraConfig
from framepipe.core.errors import CameraError
from framepipe.core.frame import FRAME_DTYPES, Frame


def load_cv2() -> Any:
    # OpenCV logs its own warnings (failed V4L probes, ffmpeg notices) on stderr; framepipe
    # reports failures itself, so keep OpenCV's to errors unless the user asked otherwise
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    return import_extra("cv2", "opencv", "opencv-python-headless")


class OpenCVCamera(Camera):
    """A webcam, video file or stream through ``cv2.VideoCapture``."""

    def __init__(self, cfg: CameraConfig):
        self.cfg = cfg
        self.frames_lost = 0
        self._cv2: Any = None
        self._cap: Any = None
        self._next = 0
        self._expected: int | None = None
        self._pacer = Pacer()
        self._meta: dict[str, Any] = {}
        if cfg.device is not None:
            self.what = f"opencv device {cfg.device}"
        elif cfg.path is not None:
            self.what = f"video file {cfg.path}"
        else:
            self.what = f"stream {cfg.url}"

    def open(self) -> None:
        cv2 = self._cv2 = load_cv2()
        cfg = self.cfg
        timeout_ms = int(cfg.grab_timeout_s * 1000)
        # open/read timeouts: without them a dead stream URL blocks for ffmpeg's default
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
        # "%" is an image-sequence pattern (frame_%04d.png): OpenCV expands it, we cannot check it
        if cfg.path is not None and "%" not in cfg.path:
            if not os.path.isfile(cfg.path):
                raise CameraError(f"{self.what}: no such file")
            if not os.access(cfg.path, os.R_OK):
                raise CameraError(f"{self.what}: not readable (permissions)")
        if cfg.path is not None:
            cap = cv2.VideoCapture(cfg.path, cv2.CAP_ANY, params)
        elif cfg.url is not None:
            cap = cv2.VideoCapture(cfg.url, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(cfg.device, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            why = "not a video OpenCV can decode" if cfg.path is not None else "cannot be opened"
            raise CameraError(f"{self.what}: {why}")
        self._cap = cap
        self._next = 0
        self._pacer.restart()
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self._expected = count if cfg.path is not None and count > 0 else None
        self._meta = {
            "source": "opencv",
            "model": f"OpenCV {cv2.__version__} ({cap.getBackendName()})",
            "input": cfg.path or cfg.url or f"device {cfg.device}",
            "colour": cfg.colour,
            "channel_order": "RGB" if cfg.colour == "rgb" else "luminance",
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "source_fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0),
            "fps": cfg.fps,
            "driver": f"opencv-python-headless {cv2.__version__}",
        }
        if self._expected is not None:
            self._meta["frames_in_file"] = self._expected

    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def grab(self, timeout_s: float) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.what}: grab before open")
        k = self._next
        if self.cfg.count and k >= self.cfg.count:
            return None
        if self.cfg.fps > 0:
            self._pacer.wait_until(k / self.cfg.fps)
        cv2 = self._cv2
        pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
        try:
            ok, image = self._cap.read()
        except cv2.error as e:
            raise CameraError(f"{self.what}: read failed after {k} frames: {e}") from e
        t_acq_ns = time.time_ns()
        if not ok or image is None:
            if self.cfg.path is not None:
                if self._expected is not None and k < self._expected:
                    raise CameraError(
                        f"{self.what}: ended after {k} of the {self._expected} frames its header announces "
                        "(truncated or corrupt file)"
                    )
                return None  # the end of the video
            raise CameraError(f"{self.what}: no frame after {k} frames (unplugged, or the stream ended)")
        array = self._convert(image)
        self._next = k + 1
        return Frame(frame_id=k, array=array, t_acq_ns=t_acq_ns, extra={"video_pos_ms": round(pos_ms, 3)})

    def _convert(self, image: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        if image.dtype.name not in FRAME_DTYPES:
            raise CameraError(f"{self.what}: frames of dtype {image.dtype} are not supported (uint8/uint16 only)")
        if image.ndim == 2:
            gray = image
            if self.cfg.colour == "rgb":
                return np.ascontiguousarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB))
            return np.ascontiguousarray(gray)
        if image.shape[2] == 4:
            code_gray, code_rgb = cv2.COLOR_BGRA2GRAY, cv2.COLOR_BGRA2RGB
        else:
            code_gray, code_rgb = cv2.COLOR_BGR2GRAY, cv2.COLOR_BGR2RGB
        if self.cfg.colour == "rgb":
            return np.ascontiguousarray(cv2.cvtColor(image, code_rgb))
        return np.ascontiguousarray(cv2.cvtColor(image, code_gray))

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
