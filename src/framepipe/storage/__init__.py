"""The HDF5 file format: NeXus layout, frame ledger, SWMR (``h5file``) and the compression
filters (``compression``). The recorder writes through it; replay and ``inspect`` read
through it.

May import: ``framepipe.core``, ``framepipe.config``. No sockets.
"""

from framepipe.storage.compression import Codec
from framepipe.storage.h5file import FrameFile, open_for_reading

__all__ = ["Codec", "FrameFile", "open_for_reading"]
