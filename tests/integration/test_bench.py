"""`framepipe bench --quick` runs end to end and writes its JSON and plot (no speed assertions, ever)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framepipe.testing.deployment import child_env

pytestmark = pytest.mark.integration


def _bench(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framepipe", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=cwd,
    )


@pytest.mark.timeout(400)
def test_quick_bench_writes_json_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _bench("--quick", "--out", str(out), cwd=tmp_path, timeout=380)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "targets" in proc.stdout  # the terminal table

    results = json.loads((out / "bench.json").read_text())
    cores = os.cpu_count() or 1
    assert results["machine"]["cores"] == cores and results["quick"] is True

    kernels = {(k["size"], k["dtype"]) for k in results["kernel"]}
    assert kernels >= {(1024, "uint8"), (1024, "uint16"), (2048, "uint8"), (2048, "uint16")}
    assert all(k["fps"] > 0 for k in results["kernel"])
    # the kernel on every core at once, measured before every pipeline run like the kernel
    parallel = results["kernel_parallel"]
    assert parallel["processes"] == cores and parallel["fps"] > 0
    assert len(parallel["fps_samples"]) == 1 + 2 * (cores + 1)

    processors = {k["processor"] for k in results["processors"]["kernels"]}
    assert {"fft", "flatfield", "phase_shift"} <= processors and all(
        k["fps"] > 0 for k in results["processors"]["kernels"]
    )
    assert 0 <= results["processors"]["overhead"]["overhead_ms"] < 0.05  # the plugin call's target

    frames = results["plan"]["pipeline_frames"]
    assert [r["workers"] for r in results["pipeline"]] == list(range(1, cores + 2))
    for run in results["pipeline"]:
        # every frame exactly once through the real processes
        assert run["received"] == frames and run["missing"] == 0, run
        assert sum(run["per_worker"].values()) == frames
        assert run["fps"] > 0 and run["efficiency"] > 0
        assert {"sink", "ventilator", "publisher"} <= run["components"].keys()
        if run["workers"] >= cores:
            assert run["efficiency_parallel"] == round(run["fps"] / parallel["fps"], 3)

    assert results["naive"]["fps"] > 0 and results["naive"]["frames"] == results["plan"]["naive_frames"]
    for section, reference in (("transport", "raw_pyzmq"), ("recorder", "raw_h5py")):
        assert results[section]["framepipe"]["fps"] > 0 and results[section][reference]["fps"] > 0
        assert results[section]["ratio"] > 0

    latency = results["latency"]
    assert len(latency["samples_ms"]) == results["plan"]["latency_frames"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert all(info["peak_rss_mb"] > 0 for info in results["memory"].values())
    assert {t["verdict"] for t in results["targets"]} <= {"meets", "misses", "reported"}

    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[2] == 3 and (image != 255).any()


def test_bad_bench_option_is_one_clear_line(tmp_path: Path) -> None:
    proc = _bench("--only", "kernel,warp-drive", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "framepipe bench: error: --only: unknown measurement warp-drive; "
        "choose from kernel, processors, pipeline, naive, transport, recorder, wire, latency"
    ]
    assert not (tmp_path / "bench-out").exists()  # nothing started, nothing written
