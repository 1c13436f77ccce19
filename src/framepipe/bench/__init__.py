"""``framepipe bench``: the pipeline measured against its own ceilings, in one run.

One module per measurement — :mod:`~framepipe.bench.kernel` (the CPU ceiling),
:mod:`~framepipe.bench.pipeline` (W = 1 … cores+1 workers, real processes),
:mod:`~framepipe.bench.naive` (the tutorial-style baseline, benchmark only),
:mod:`~framepipe.bench.transport` (publisher → subscriber vs raw pyzmq),
:mod:`~framepipe.bench.recorder` (recorder vs h5py), :mod:`~framepipe.bench.latency`
(p50/p95/p99 at a fixed rate) — plus :mod:`~framepipe.bench.processes` (real component
processes with their peak RSS and CPU) and :mod:`~framepipe.bench.report` (table, JSON,
PNG). :mod:`~framepipe.bench.run` puts them together. See docs/performance.md.
"""

from __future__ import annotations

from framepipe.bench.processes import BenchError
from framepipe.bench.run import MEASUREMENTS, Options, run

__all__ = ["MEASUREMENTS", "BenchError", "Options", "run"]
