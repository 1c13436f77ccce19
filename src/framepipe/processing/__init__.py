"""What a worker computes on a frame: the FFT family (``fft``), the built-in kernel.

May import: ``framepipe.core``, ``framepipe.config``. No sockets, no files.
"""

from framepipe.processing.fft import spectrum

__all__ = ["spectrum"]
