"""Subscribers: components that take a broadcast stream and do something with it — the
recorder (``recorder``: HDF5 files) and the viewer (``viewer``: a live web page).

May import: ``framepipe.runtime`` and below (wire, cameras, storage, processing, config, core).
"""

from framepipe.subscribers.recorder import Recorder
from framepipe.subscribers.viewer import Viewer

__all__ = ["Recorder", "Viewer"]
