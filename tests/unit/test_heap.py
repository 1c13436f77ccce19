"""keep_frame_buffers: freed frame-sized buffers are reused, not faulted in afresh.

The outcome is the kernel's count of minor page faults while a process does what a
worker does per frame — libzmq receives 2 MiB over tcp into a buffer its I/O thread
allocates, the FFT allocates its temporaries, everything is freed — measured in a fresh
interpreter with and without the setting.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator thresholds only")

SCRIPT = """
import resource, sys
import numpy as np, zmq
from framepipe.processing.fft import spectrum
from framepipe.core.heap import keep_frame_buffers
if sys.argv[1] == "keep":
    assert keep_frame_buffers()
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
port = pull.bind_to_random_port("tcp://127.0.0.1")
push = ctx.socket(zmq.PUSH)
push.connect(f"tcp://127.0.0.1:{port}")
frame = np.ones((1024, 1024), np.uint16)
def frames(n):
    for _ in range(n):
        push.send(frame, copy=False)
        msg = pull.recv(copy=False)
        spectrum(np.frombuffer(msg.buffer, np.uint16).reshape(1024, 1024), "power")
frames(20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
frames(200)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip())


def test_frame_buffers_are_reused_instead_of_faulted_in() -> None:
    default, kept = _faults("default"), _faults("keep")
    # glibc 2.36 here: ~300,000 faults by default (fresh pages for most buffers), ~10 kept
    assert default > 20_000, f"glibc's default no longer returns these buffers ({default} faults): test is moot"
    assert kept < default / 20, f"{kept} faults with keep_frame_buffers vs {default} without"
