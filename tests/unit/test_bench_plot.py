"""bench.png: the latency histogram stays inside its frame (the first bar no longer covers
the axis), and the y-axis label sits above the plot, clear of the top tick's label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from framepipe.bench.report import PANEL, plot

cv2 = pytest.importorskip("cv2")


def test_the_histogram_keeps_its_frame_and_the_label_its_place(tmp_path: Path) -> None:
    samples = list(np.abs(np.random.default_rng(0).normal(2.0, 1.0, 2000)))  # the first bins full
    results = {
        "pipeline": [
            {"workers": 1, "fps": 100.0, "ceiling_fps": 150.0},
            {"workers": 2, "fps": 180.0, "ceiling_fps": 300.0},
        ],
        "latency": {"fps": 100.0, "samples_ms": samples, "p50_ms": 2.0, "p99_ms": 5.0},
        "machine": {"cores": 2, "loadavg_start": 1.0},
        "frame": "64x64 uint16",
    }
    assert plot(results, tmp_path / "bench.png") is None
    img = cv2.imread(str(tmp_path / "bench.png"))
    for dx in (0, 600):  # both panels
        x0, y0, x1, y1 = (PANEL[0] + dx, PANEL[1], PANEL[2] + dx, PANEL[3])
        assert (img[y0:y1, x0] == 0).all(), "the left edge of the frame is whole"
        bar = np.array([200, 90, 20], np.uint8)  # the bars' blue (BGR)
        assert not (img[y1, x0:x1] == bar).all(axis=1).any(), "no bar over the bottom edge"
        # nothing drawn in the band between the y-axis label (above the plot) and the top tick label
        left_of_axis = img[y0 - 8 : y0 - 5, x0 - 75 : x0 - 2]
        assert (left_of_axis == 255).all(), "the label overlaps the top tick"
