"""What a worker computes on a frame: processors (``interface``), found by name
(``registry``: built-ins, ``module:Class``, entry points in ``framepipe.processors``) and run
alone or as a chain (``chain``). Built-ins: the FFT family (``fft``, the default), ROI
statistics (``roi``), dark/flat correction (``flatfield``), phase-correlation shift
(``phase``). See docs/processors.md.

May import: ``framepipe.core``, ``framepipe.config``. No sockets; files only to read a
processor's references in its setup.
"""

from framepipe.core.outputs import Output
from framepipe.processing.chain import Chain, FrameFailure
from framepipe.processing.fft import spectrum
from framepipe.processing.interface import FrameInfo, Processor
from framepipe.processing.registry import ENTRY_POINT_GROUP, resolve

__all__ = ["ENTRY_POINT_GROUP", "Chain", "FrameFailure", "FrameInfo", "Output", "Processor", "resolve", "spectrum"]
