"""The viewer: a live web page of a stream that never slows it.

- ``component``: the :class:`Viewer` component: watches the preview streams, renders views;
- ``http``: serves them (the routes, and a standard-library HTTP server in a thread);
- ``page.html``: the page itself, a package file;
- ``images``: frames and spectra as pictures (contrast, colour map, PNG); ``inspect`` uses them too.
"""

from framepipe.subscribers.viewer.component import Viewer

__all__ = ["Viewer"]
