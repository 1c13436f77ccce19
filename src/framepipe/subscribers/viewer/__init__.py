"""The viewer: a live web page of a stream that never slows it (``component``), and the
images it shows (``images``: contrast, colour map, PNG; ``inspect`` uses them too).
"""

from framepipe.subscribers.viewer.component import Viewer

__all__ = ["Viewer"]
