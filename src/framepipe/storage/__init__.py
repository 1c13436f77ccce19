"""The HDF5 file format: NeXus layout, frame ledger, SWMR (``h5file``) and the compression
filters (``compression``). The recorder writes through it; replay and ``inspect`` read
through it.

May import: ``framepipe.core``, ``framepipe.config``. No sockets.
"""
