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
from typing import Any, Protocol

#: the longest a long poll may be asked to wait (a server thread is held meanwhile)
MAX_POLL_S = 30.0


@dataclasses.dataclass
class View:
    """One rendered update: a frame and its spectrum as PNGs, with what they show."""

    view_id: int
    frame_png: bytes | None
    spectrum_png: bytes | None
    meta: dict[str, Any]


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
