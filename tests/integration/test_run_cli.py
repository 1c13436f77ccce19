"""`framepipe run` end to end, as a new user runs it after the README's install command."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the recorder compresses with bitshuffle-lz4 by default)
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.testing.deployment import PORT_KEYS, child_env, free_ports

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
    (frames_file,) = (tmp_path / "data").glob("local_*_frames.h5")
    (results_file,) = (tmp_path / "data").glob("local_*_results.h5")
    assert frames_file.name.removesuffix("frames.h5") == results_file.name.removesuffix("results.h5"), "one run id"
    with h5py.File(frames_file, "r") as f:
        assert f["entry/data/frames"].shape == (120, 96, 128)
        row = int(np.flatnonzero(f["entry/data/frame_id"][:] == 77)[0])
        np.testing.assert_array_equal(f["entry/data/frames"][row], synthetic_frame(77, 96, 128, "uint16"))
    with h5py.File(results_file, "r") as f:
        assert sorted(f["entry/data/frame_id"][:].tolist()) == list(range(120))


def test_framepipe_run_twice_keeps_both_and_never_overwrites(tmp_path: Path) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    args = [*framepipe_cmd(), "run", "--no-tui", "--set", "camera.count=10"]
    args += ["--set", "camera.width=32", "--set", "camera.height=32"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        env = child_env(port_env())
        return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)

    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    (first_file,) = (tmp_path / "data").glob("local_*_frames.h5")
    before = first_file.read_bytes()
    # a second run gets its own run id, so its own files
    second = run("--set", "run.id=second")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (tmp_path / "data" / "local_second_0001_local_frames.h5").is_file()
    # the same run id again: nothing is overwritten, the run writes part files beside them
    kept = (tmp_path / "data" / "local_second_0001_local_frames.h5").read_bytes()
    third = run("--set", "run.id=second")
    assert third.returncode == 0, third.stdout + third.stderr
    assert (tmp_path / "data" / "local_second_0001_local_frames-part2.h5").is_file()
    assert (tmp_path / "data" / "local_second_0001_local_frames.h5").read_bytes() == kept
    assert first_file.read_bytes() == before


def test_framepipe_run_refuses_a_taken_port_before_it_starts_anything(tmp_path: Path) -> None:
    env = port_env()
    with socket.socket() as held:  # another program listening on the sink's results port
        held.bind(("127.0.0.1", int(env["FRAMEPIPE_SINK__RESULTS_PORT"])))
        held.listen()
        args = ["run", "--no-tui", "-c", str(REPO / "configs" / "local.toml"), "--set", "run.data_dir=data"]
        proc = subprocess.run(
            [sys.executable, "-m", "framepipe", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(env),
            cwd=tmp_path,
        )
    port = env["FRAMEPIPE_SINK__RESULTS_PORT"]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"framepipe run: error: sink.results_port {port} is in use"), line
    assert not (tmp_path / "data").exists(), "no data dir, so no log file and no .h5"
    assert list(tmp_path.rglob("*")) == []
