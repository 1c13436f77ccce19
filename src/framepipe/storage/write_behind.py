"""Write-behind for a recording: what is on its way to disk leaves the page cache.

A recorder writes gigabytes that nobody reads again soon. Left alone, the kernel keeps
all of it in the page cache and takes a fresh page for every 4 KiB written; on the test VM
(whose host reclaims idle guest memory) ``write()`` of a 2 MB frame then cost 1.3–5 ms of
system CPU, varying run to run with the memory's history: more than receiving the frame,
and most of what a recorder storing received chunks spends. Starting the write-back of
each :data:`STEP` once it is complete (``sync_file_range``) and dropping the step before
the previous one (``posix_fadvise(DONTNEED)``) keeps the file's cached part within about
three steps, so the kernel reuses pages it has just freed: 0.66–0.76 ms per frame in the
same measurement (docs/performance.md).

The file's bytes are the same; only where they sit in memory changes. Nothing waits for
the disk here, and a step still being written when its turn comes stays cached; but
starting write-back early means a disk slower than the stream throttles the recorder after
a few steps rather than after the kernel's dirty-page limit (gigabytes). Where the calls
do not exist (not Linux) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

#: bytes written between two write-back requests (16 frames of 2 MB)
STEP = 32 << 20
#: sync_file_range(2) flag: start write-back of the range's dirty pages, do not wait
SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Any:
    """libc's sync_file_range, or None where there is none."""
    if not hasattr(os, "posix_fadvise"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_sync = _sync_file_range()


class WriteBehind:
    """Write-back and eviction of one open file (by descriptor) as it grows, a step at a time."""

    def __init__(self, fd: int | None, step: int = STEP):
        self.fd = fd if _sync is not None else None
        self.step = step
        #: write-back requested up to here, and up to where it had been the time before
        self.requested = 0
        self._before = 0
        #: dropped from the cache up to here
        self.dropped = 0

    @property
    def active(self) -> bool:
        return self.fd is not None

    def grown(self) -> None:
        """After an append: once a step is complete, ask for its write-back and drop the one before."""
        if self.fd is None:
            return
        try:
            end = os.fstat(self.fd).st_size
        except OSError:
            self.fd = None
            return
        if end - self.requested < self.step:
            return
        assert _sync is not None
        previous = self.requested
        if _sync(self.fd, previous, end - previous, SYNC_FILE_RANGE_WRITE) != 0:
            self.fd = None  # not supported here: the cache is left to the kernel
            return
        self.requested, self._before, old = end, previous, self._before
        if old > self.dropped:
            # requested two steps ago: on disk by now unless the disk is slower than the
            # stream, and then those pages stay (DONTNEED skips dirty and in-flight pages)
            try:
                os.posix_fadvise(self.fd, self.dropped, old - self.dropped, os.POSIX_FADV_DONTNEED)
            except OSError:
                self.fd = None
                return
            self.dropped = old
