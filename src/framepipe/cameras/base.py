"""The camera source interface every source implements."""

from __future__ import annotations

import abc
import importlib
import time
from types import ModuleType, TracebackType
from typing import Any

from framepipe.core.errors import CameraError
from framepipe.core.frame import Frame


class Camera(abc.ABC):
    """A source of frames.

    ``__init__`` only stores settings; ``open()`` talks to the device and raises
    :class:`~framepipe.errors.CameraError` with a clear message when it cannot;
    ``grab()`` returns the next frame, or ``None`` when a finite source has ended;
    ``close()`` is safe to call twice. ``metadata()`` describes the source (model,
    serial, exposure, ...) as a flat JSON-serialisable dict that travels with the
    stream and ends up in the HDF5 attributes.
    """

    #: frames the source itself lost (driver skipped, camera buffer overrun), if it knows
    frames_lost: int = 0
    #: the publisher sends bitshuffle-LZ4 chunks: a source that holds its frames in that
    #: form (replay) may give them as ``Frame.chunk`` instead of pixels (set before open)
    chunks_wanted: bool = False

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def grab(self, timeout_s: float) -> Frame | None:
        """Block up to ``timeout_s`` for the next frame; ``None`` means end of stream.

        Raises CameraError when the device fails or the grab times out.
        """

    @abc.abstractmethod
    def close(self) -> None: ...

    def metadata(self) -> dict[str, Any]:
        return {}

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def import_extra(module: str, extra: str, package: str) -> ModuleType:
    """Import an optional dependency, or fail with the extra that provides it.

    Imported lazily so that ``framepipe`` itself never needs pypylon or OpenCV.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CameraError(
            f"{module} is not installed ({e}); install the extra: pip install 'framepipe[{extra}]' (or {package})"
        ) from e


class Pacer:
    """Holds a source to a frame rate, or to recorded timestamps, without drifting.

    Each frame has a due time measured from the first one; a late frame is sent at once
    and does not shift the ones after it (the schedule is absolute, not a sleep per frame).
    """

    def __init__(self) -> None:
        self._t0: float | None = None

    def restart(self) -> None:
        self._t0 = None

    def wait_until(self, offset_s: float) -> None:
        """Block until ``offset_s`` after the first call (which returns at once)."""
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now - offset_s
            return
        wait = self._t0 + offset_s - now
        if wait > 0:
            time.sleep(wait)  # sleep-ok: pacing the frame rate, not synchronisation
