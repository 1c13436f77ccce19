"""The camera source interface every source implements."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Any

from framepipe.frame import Frame


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
