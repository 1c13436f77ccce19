"""What the viewer makes and what serves it: rendered views, and the two protocols between
the viewer component and whatever carries its views to a browser.

The viewer (:mod:`~framepipe.subscribers.viewer.component`) knows nothing of HTTP: the
process that runs it (``framepipe view``, :mod:`framepipe.ops.web`) hands it a
:class:`Front` to start and close, and the front asks it for views through
:class:`ViewSource`. So the web stack lives above the components, next to the operations
(control, status) it also serves.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import numpy as np

#: the longest a long poll may be asked to wait (a server thread is held meanwhile)
MAX_POLL_S = 30.0


@dataclasses.dataclass
class View:
    """One rendered update: a frame and its spectrum as PNGs, with what they show.

    ``values`` is the frame as received (a reference, not a copy: the viewer drops it with
    the view), so the page's pixel readout gets a count at full resolution for one pixel
    at a time, instead of the whole frame's values with every update.
    """

    view_id: int
    frame_png: bytes | None
    spectrum_png: bytes | None
    meta: dict[str, Any]
    values: np.ndarray | None = None
    #: the frame's channels are blue-green-red (OpenCV): the readout says red-green-blue
    bgr: bool = False

    def pixel(self, x: int, y: int) -> dict[str, Any] | None:
        """The count(s) of the frame's pixel at column ``x``, row ``y`` (None: no frame, or outside)."""
        values = self.values
        if values is None or not (0 <= y < values.shape[0] and 0 <= x < values.shape[1]):
            return None
        value = values[y, x]
        if values.ndim == 3:
            shown: Any = [_json_number(v.item()) for v in (value[::-1] if self.bgr else value)]
        else:
            shown = _json_number(value.item())
        return {"view_id": self.view_id, "frame_id": self.meta.get("frame_id"), "x": x, "y": y, "value": shown}


def _json_number(value: Any) -> Any:
    """NaN and infinities as text: JSON has no number for them."""
    return value if not isinstance(value, float) or math.isfinite(value) else str(value)


class ViewSource(Protocol):
    """What a front asks of the viewer."""

    def latest_view(self, view_id: int | None = None) -> View | None:
        """The view ``view_id`` if it is still kept, else the newest (None before the first)."""

    def wait_for_view(self, after: int, timeout_s: float) -> None:
        """Return when a view newer than ``after`` exists, or after ``timeout_s``."""

    def status(self) -> dict[str, Any]:
        """The live view's status; asking it tells the viewer someone watches."""


class Front(Protocol):
    """Carries the views to browsers: started once the viewer is set up, closed with it."""

    def start(self) -> None:
        """Bind and serve in the background; an ``OSError`` if the port cannot be bound."""

    def close(self) -> None:
        """Stop serving and release the port (safe twice, and before :meth:`start`)."""
