"""`framepipe run` end to end, as a new user runs it after the README's install command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the recorder compresses with bitshuffle-lz4 by default)
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from tests.helpers.deployment import PORT_KEYS, child_env, free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def port_env() -> dict[str, str]:
    ports = iter(free_ports(sum(len(v) for v in PORT_KEYS.values())))
    return {
        f"FRAMEPIPE_{section.upper()}__{key.upper()}": str(next(ports))
        for section, keys in PORT_KEYS.items()
        for key in keys
    }


def framepipe_cmd() -> list[str]:
    exe = shutil.which("framepipe")
    return [exe] if exe else [sys.executable, "-m", "framepipe"]


def test_framepipe_run_default_config(tmp_path: Path) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    proc = subprocess.run(
        [
            *framepipe_cmd(),
            "run",
            "--set",
            "camera.count=120",
            "--set",
            "camera.width=128",
            "--set",
            "camera.height=96",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(port_env()),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every frame accounted for" in proc.stdout
    for stage in ("acquired", "published", "processed", "recorded frames", "recorded results", "missing"):
        assert stage in proc.stdout
    with h5py.File(tmp_path / "data" / "local_frames.h5", "r") as f:
        assert f["entry/data/frames"].shape == (120, 96, 128)
        row = int(np.flatnonzero(f["entry/data/frame_id"][:] == 77)[0])
        np.testing.assert_array_equal(f["entry/data/frames"][row], synthetic_frame(77, 96, 128, "uint16"))
    with h5py.File(tmp_path / "data" / "local_results.h5", "r") as f:
        assert sorted(f["entry/data/frame_id"][:].tolist()) == list(range(120))


def test_framepipe_run_never_overwrites_and_fails_clearly(tmp_path: Path) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    args = [
        *framepipe_cmd(),
        "run",
        "--set",
        "camera.count=10",
        "--set",
        "camera.width=32",
        "--set",
        "camera.height=32",
    ]
    first = subprocess.run(args, capture_output=True, text=True, timeout=120, env=child_env(port_env()), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    before = (tmp_path / "data" / "local_frames.h5").read_bytes()
    second = subprocess.run(args, capture_output=True, text=True, timeout=120, env=child_env(port_env()), cwd=tmp_path)
    assert second.returncode != 0
    assert "file exists" in second.stderr
    assert "NOT every frame accounted for" in second.stdout
    assert (tmp_path / "data" / "local_frames.h5").read_bytes() == before
