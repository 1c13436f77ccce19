"""framepipe: a distributed ZeroMQ image-processing pipeline for lab cameras.

The package's map is docs/architecture.md: the five components at the top (``publisher``,
``ventilator``, ``workers``, ``sink``, ``subscribers``), everything else in layered
subpackages. The errors and the decision classes are in :mod:`framepipe.core`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from framepipe.config import Config, load_config
from framepipe.core import Frame, FramepipeError

__all__ = ["Config", "Frame", "FramepipeError", "__version__", "load_config"]
