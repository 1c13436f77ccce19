"""The viewer: a live web page of a stream that never slows it.

- ``component``: the :class:`Viewer` component: watches the preview streams, renders views;
- ``views``: a rendered view, and the protocols of what serves them (``framepipe.ops.web``);
- ``images``: frames and spectra as pictures (contrast, colour map, PNG); ``inspect`` uses them too;
- ``saturation``: how many pixels sit at the camera's full scale (the page's warning).
"""

from framepipe.subscribers.viewer.component import Viewer

__all__ = ["Viewer"]
