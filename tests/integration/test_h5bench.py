"""The recorder benchmark runs end to end (small frames; rates are reported, never asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framepipe.bench.h5bench import measure

pytestmark = pytest.mark.integration


def test_measure_runs_every_variant(tmp_path: Path) -> None:
    results = measure(n=20, height=64, width=48, compressions=("bitshuffle-lz4", "none"), directory=tmp_path)
    for compression in ("bitshuffle-lz4", "none"):
        row = results[compression]
        for what in ("h5py", "writer", "recorder"):
            assert row[what]["fps"] > 0 and row[what]["MBps"] > 0 and row[what]["cpu_ms_per_frame"] >= 0
        assert row["recorder_vs_h5py"] > 0
    assert results["bitshuffle-lz4"]["writer"]["ratio"] > 1.0
    assert list(tmp_path.iterdir()) == [], "temporary files removed"
