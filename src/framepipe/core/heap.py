"""Keep freed frame buffers in the process instead of handing them back to the kernel.

Every hop allocates and frees a few large buffers per frame: libzmq's receive buffer
(2 MB for a 1024² uint16 frame), the FFT's float32 copy, its complex half-spectrum and
the result. glibc serves blocks that large with ``mmap`` and gives them back with
``munmap`` — or, once its threshold has adapted, gives the top of the heap back with
``brk`` whenever more than twice the threshold is free — so each new buffer is fresh
pages: one page fault per 4 KiB and the kernel zeroing every page. ``perf record -a``
of a W=2 pipeline showed page faults and ``clear_page`` taking about a tenth of all CPU
time (docs/performance.md).

:func:`keep_frame_buffers` raises both thresholds once at process start, so freed
buffers are reused from the heap. Memory stays bounded: the heap only keeps what the
process once had in use at the same time, which the high-water marks and the in-flight
window bound; the peak RSS of every component is reported by ``framepipe bench``.

On a C library other than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import platform

#: mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: the largest mmap threshold glibc accepts on 64-bit (HEAP_MAX_SIZE / 2): blocks above
#: it (frames over 32 MiB, e.g. 4096² uint16 and larger) are still mmap'ed
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: free memory at the top of the heap kept before glibc trims it
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


@functools.cache
def keep_frame_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; True if it took effect."""
    if platform.libc_ver()[0] != "glibc":
        return False  # musl, macOS, …: their allocators have no such thresholds
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return ok_mmap and ok_trim
