"""``framepipe bench``: the pipeline measured against its own ceilings, in one run.

One module per measurement — :mod:`~framepipe.bench.kernel` (the CPU ceiling),
:mod:`~framepipe.bench.pipeline` (W = 1 … cores+1 workers, real processes),
:mod:`~framepipe.bench.naive` (the tutorial-style baseline, benchmark only),
:mod:`~framepipe.bench.transport` (publisher → subscriber vs raw pyzmq),
:mod:`~framepipe.bench.recorder` (recorder vs h5py), :mod:`~framepipe.bench.latency`
(p50/p95/p99 at a fixed rate), :mod:`~framepipe.bench.processors` (each built-in
processor's kernel, and the plugin call's overhead), :mod:`~framepipe.bench.wire`
(bitshuffle-LZ4 on the wire: bytes saved, CPU spent) — plus :mod:`~framepipe.bench.processes` (real component
processes with their peak RSS and CPU) and :mod:`~framepipe.bench.report` (table, JSON,
PNG). :mod:`~framepipe.bench.run` puts them together. See docs/performance.md.

Also here: everything else that measures — :mod:`~framepipe.bench.h5bench` (HDF5 write
options) and :mod:`~framepipe.bench.camera` (a real camera's grab rate vs the publisher's).

May import: ``framepipe.testing`` and everything below it. Only ``framepipe.ops.cli`` imports it.
"""

from __future__ import annotations

#: the measurements ``framepipe bench --only`` takes, in the order they run. Kept here, with no
#: imports, because every component builds the CLI parser at start-up: importing the bench's
#: modules would cost each of them numpy/h5py start-up work it does not need.
MEASUREMENTS = ("kernel", "processors", "pipeline", "naive", "transport", "recorder", "wire", "latency")

__all__ = ["MEASUREMENTS"]
