"""Write-behind: a recording's written part leaves the page cache, and the file stays whole."""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from framepipe.storage import write_behind
from framepipe.storage.write_behind import WriteBehind

STEP = 1 << 20
PAGE = mmap.PAGESIZE


def _resident_pages(path: Path, length: int) -> np.ndarray:
    """mincore(2) of the file's first ``length`` bytes: True where the page is in the page cache."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    vec = np.zeros((length + PAGE - 1) // PAGE, np.uint8)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), length, prot=mmap.PROT_READ) as mem:
        view = np.frombuffer(mem, np.uint8)  # the mapping, not touched: mincore only looks
        try:
            assert libc.mincore(view.ctypes.data, length, vec.ctypes.data) == 0, os.strerror(ctypes.get_errno())
        finally:
            del view
    return (vec & 1).astype(bool)


def _page_cache_is_the_storage(path: Path) -> bool:
    """tmpfs (and ramfs) keep files only in the page cache: nothing to drop there."""
    best, fstype = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, kind, *_ = line.split()
        if str(path).startswith(mount) and len(mount) > len(best):
            best, fstype = mount, kind
    return fstype in ("tmpfs", "ramfs")


def _write(path: Path, steps: int, wb: WriteBehind | None, fd: int) -> None:
    block = os.urandom(STEP // 4)
    for _ in range(steps * 4):
        os.write(fd, block)
        os.fdatasync(fd)  # on disk at once: whatever is dropped is dropped now, not when the disk gets to it
        if wb is not None:
            wb.grown()


@pytest.mark.skipif(not hasattr(os, "posix_fadvise") or write_behind._sync is None, reason="Linux only")
def test_written_steps_leave_the_page_cache_and_the_file_is_whole(tmp_path: Path) -> None:
    if _page_cache_is_the_storage(tmp_path):
        pytest.skip(f"{tmp_path} is on tmpfs: the page cache is the storage")
    steps = 6
    data = {}
    for name, behind in (("plain", False), ("behind", True)):
        path = tmp_path / f"{name}.bin"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY)
        try:
            wb = WriteBehind(fd, step=STEP) if behind else None
            _write(path, steps, wb, fd)
        finally:
            os.close(fd)
        data[name] = _resident_pages(path, steps * STEP)
        if wb is not None:
            assert wb.requested == steps * STEP and wb.dropped == (steps - 2) * STEP
        assert path.stat().st_size == steps * STEP
    pages_per_step = STEP // PAGE
    dropped = (steps - 2) * pages_per_step
    # written normally, the file stays cached; written behind, every step but the last two left
    assert data["plain"][:dropped].mean() > 0.9
    assert data["behind"][:dropped].mean() < 0.1
    assert data["behind"][dropped:].mean() > 0.9


def test_no_descriptor_does_nothing(tmp_path: Path) -> None:
    wb = WriteBehind(None)
    wb.grown()
    assert not wb.active and wb.requested == 0 and wb.dropped == 0


def test_frame_file_chunks_are_those_received_with_write_behind(tmp_path: Path) -> None:
    """The file a recorder writes behind holds every chunk as given, byte for byte."""
    import h5py
    import hdf5plugin  # noqa: F401

    from framepipe.core import bitshuffle
    from framepipe.storage.h5file import FrameFile

    rng = np.random.default_rng(1)
    frames = [np.clip(rng.normal(100, 3, (256, 256)), 0, 4095).astype(np.uint16) for _ in range(40)]
    chunks = [bitshuffle.encode(f) for f in frames]
    f = FrameFile(tmp_path / "f.h5")
    f.open()
    f._write_behind.step = 1 << 16  # a step every frame or so: write-back and drops all along the file
    assert f._write_behind.active
    for k, (frame, chunk) in enumerate(zip(frames, chunks, strict=True)):
        f.append(frame, frame_id=k, t_acq_ns=k, t_recv_ns=k, chunk=chunk)
    assert f._write_behind.dropped > 0
    f.close({"complete": True})
    with h5py.File(tmp_path / "f.h5", "r") as h5:
        ds = h5["entry/data/frames"]
        for k in range(len(frames)):
            assert ds.id.read_direct_chunk((k, 0, 0))[1] == chunks[k].tobytes()
        np.testing.assert_array_equal(ds[:], np.stack(frames))
