"""Processors as plugins through real pipelines (`framepipe run`, real processes over tcp):
a lab's class by module path (the example of docs/processors.md, run as printed), one
registered by an entry point of an installed distribution, a processor failing every 10th
frame, invalid parameters, a failing setup, and `framepipe process` offline."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (the recorders compress with bitshuffle-lz4 by default)
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.core.outputs import Output
from framepipe.processing import FrameInfo
from framepipe.runtime.processes import framepipe_argv
from framepipe.storage.compression import Codec
from framepipe.storage.h5file import FrameFile
from framepipe.testing.deployment import Deployment, child_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N, H, W = 60, 32, 48
CAMERA = {"camera.count": N, "camera.height": H, "camera.width": W, "camera.reel_frames": 0, "camera.seed": 3}

FAILING = '''
import numpy as np
from pydantic import BaseModel

from framepipe.cameras import synthetic_frame
from framepipe.processing import Output, Processor


class Params(BaseModel):
    count: int
    seed: int = 0


class Every10th(Processor):
    """Raises on frames 0, 10, 20, ... of the synthetic camera (known by their content)."""

    Params = Params

    def setup(self, params, frame_info):
        h, w = frame_info.shape
        self.bad = {
            synthetic_frame(k, h, w, frame_info.dtype, params.seed, reel_frames=0).tobytes()
            for k in range(0, params.count, 10)
        }
        return [Output("total", "float64")]

    def process(self, frame):
        if frame.tobytes() in self.bad:
            raise RuntimeError("every 10th frame fails here")
        return {"total": float(frame.sum(dtype=np.float64))}
'''

PLUGIN = '''
import numpy as np

from framepipe.processing import Output, Processor


class RowStats(Processor):
    """Mean of each row (float32) and the brightest pixel (uint16)."""

    def setup(self, params, frame_info):
        return [Output("row_mean", "float32", (frame_info.shape[0],)), Output("brightest", "uint16")]

    def process(self, frame):
        return {"row_mean": frame.mean(axis=1).astype(np.float32), "brightest": frame.max()}
'''


def docs_example() -> str:
    """The complete example of docs/processors.md, exactly as printed there."""
    text = (REPO / "docs" / "processors.md").read_text()
    section = text.split("### A complete example", 1)[1]
    match = re.search(r"```python\n(.*?)\n```", section, re.S)
    assert match, "docs/processors.md lost its example"
    return match.group(1) + "\n"


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def lab_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """labproc (the docs' example) and labfail, on the PYTHONPATH of every child process."""
    root = tmp_path / "lab"
    for package, module, source in (("labproc", "centroid", docs_example()), ("labfail", "every10", FAILING)):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        (root / package / f"{module}.py").write_text(source)
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(root) + (os.pathsep + old if old else ""))
    return root


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


@pytest.fixture(scope="session")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A small distribution registering ``fp_rowstats`` in framepipe.processors, installed
    into this interpreter with pip (a wheel made here), uninstalled afterwards."""
    out = tmp_path_factory.mktemp("wheel")
    files = {
        "fp_testplugin/__init__.py": PLUGIN.encode(),
        "fp_testplugin-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fp-testplugin\nVersion: 0.1\n",
        "fp_testplugin-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: framepipe-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
        "fp_testplugin-0.1.dist-info/entry_points.txt": b"[framepipe.processors]\n"
        b"fp_rowstats = fp_testplugin:RowStats\n",
    }
    record = [_record_line(p, d) for p, d in files.items()] + ["fp_testplugin-0.1.dist-info/RECORD,,"]
    wheel = out / "fp_testplugin-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr("fp_testplugin-0.1.dist-info/RECORD", "\n".join(record) + "\n")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-index", "--no-deps", str(wheel)], check=True, timeout=120)
    try:
        yield "fp_rowstats"
    finally:
        subprocess.run([*pip, "uninstall", "-y", "fp-testplugin"], check=False, timeout=120)


def run(deployment: Deployment, settings: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    deployment.settings.update({**CAMERA, "workers.count": 2, **settings})
    deployment.write_config()
    return deployment.run_cli("run", "--no-tui", *args, timeout=150)


def recorded_frames(deployment: Deployment) -> dict[int, np.ndarray]:
    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        assert f["entry/ledger"].attrs["complete"], "the frames file holds every frame"
        return {int(i): f["entry/data/frames"][row] for row, i in enumerate(f["entry/data/frame_id"][:])}


def results(deployment: Deployment) -> h5py.File:
    return h5py.File(deployment.data / "run_results.h5", "r")


def test_docs_example_by_module_path_through_a_real_pipeline(deployment: Deployment, lab_packages: Path) -> None:
    proc = run(deployment, {"workers.processor": "labproc.centroid:Centroid", "workers.params": {"threshold": 100.0}})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    example = load_module(lab_packages / "labproc" / "centroid.py", "docs_example")
    direct = example.Centroid()
    schema = direct.setup(example.CentroidParams(threshold=100.0), FrameInfo((H, W), "uint16"))
    frames = recorded_frames(deployment)
    assert sorted(frames) == list(range(N))
    with results(deployment) as f:
        data = f["entry/data"]
        assert f["entry/ledger"].attrs["complete"] and f["entry/ledger"].attrs["missing"] == 0
        assert sorted(data["frame_id"][:].tolist()) == list(range(N))
        assert data["profile"].shape == (N, W) and data["frames"].id == data["profile"].id
        for out in schema:
            assert data[out.name].dtype == np.dtype(out.dtype) and data[out.name].shape == (N, *out.shape)
        for row, fid in enumerate(data["frame_id"][:]):
            want = direct.process(frames[int(fid)])
            np.testing.assert_array_equal(data["profile"][row], want["profile"])
            for name in ("total", "centroid_y", "centroid_x"):
                assert data[name][row] == want[name], (fid, name)


def test_entry_point_processor_through_a_real_pipeline(deployment: Deployment, installed_plugin: str) -> None:
    listing = deployment.run_cli("processors")
    assert listing.returncode == 0 and installed_plugin in listing.stdout and "fp-testplugin" in listing.stdout
    proc = run(deployment, {"workers.processor": installed_plugin})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    frames = recorded_frames(deployment)
    with results(deployment) as f:
        data = f["entry/data"]
        assert f["entry/ledger"].attrs["complete"]
        assert data["row_mean"].dtype == np.float32 and data["brightest"].dtype == np.uint16
        assert sorted(data["frame_id"][:].tolist()) == list(range(N))
        for row, fid in enumerate(data["frame_id"][:]):
            frame = frames[int(fid)]
            np.testing.assert_array_equal(data["row_mean"][row], frame.mean(axis=1).astype(np.float32))
            assert data["brightest"][row] == frame.max()


def test_a_processor_raising_on_every_10th_frame(deployment: Deployment, lab_packages: Path) -> None:
    proc = run(
        deployment, {"workers.processor": "labfail.every10:Every10th", "workers.params": {"count": N, "seed": 3}}
    )
    # DESIGN and docs/processors.md: failed frames make the run exit 1
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    failed = list(range(0, N, 10))
    frames = recorded_frames(deployment)
    with results(deployment) as f:
        ledger = f["entry/ledger"]
        assert ledger["failed_ids"][:].tolist() == failed
        assert ledger["missing_ids"][:].tolist() == [] and ledger.attrs["missing"] == 0
        assert ledger.attrs["failed"] == len(failed) and not ledger.attrs["complete"]
        assert ledger.attrs["end_reason"] == "failed frames"
        assert ledger.attrs["first_failure"] == "labfail.every10:Every10th: RuntimeError: every 10th frame fails here"
        ids = f["entry/data/frame_id"][:].tolist()
        assert sorted(ids) == [k for k in range(N) if k not in failed]
        for row, fid in enumerate(ids):
            assert f["entry/data/total"][row] == frames[fid].sum(dtype=np.float64)
    inspect = subprocess.run(
        framepipe_argv("inspect", str(deployment.data / "run_results.h5")),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert re.search(r"failed ids\s+6: ", inspect.stdout), inspect.stdout
    worker_logs = "".join(p.read_text() for p in deployment.dir.rglob("*.log")) + proc.stdout + proc.stderr
    assert "failed: labfail.every10:Every10th: RuntimeError: every 10th frame fails here" in worker_logs


def test_invalid_parameters_are_one_line_exit_2_and_nothing_starts(deployment: Deployment) -> None:
    proc = run(deployment, {}, "--set", "workers.params.result=loud")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "workers.params.result" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not list(deployment.dir.rglob("*.h5")), "nothing started, no file written"
    worker = deployment.run_cli("worker", "--set", "workers.processor=roi", "--set", "workers.params.bogus=1")
    assert worker.returncode == 2 and worker.stderr.strip().endswith("workers.params.bogus: unknown parameter")


def test_a_failing_setup_stops_the_worker_with_exit_2(deployment: Deployment, tmp_path: Path) -> None:
    np.save(tmp_path / "dark.npy", np.zeros((H + 1, W), np.float32))  # not the frames' shape
    deployment.settings.update(
        {
            **CAMERA,
            "workers.count": 1,
            "workers.processor": ["flatfield", "fft"],
            "workers.params": {"flatfield": {"dark": str(tmp_path / "dark.npy")}},
        }
    )
    deployment.write_config()
    procs = deployment.start_pipeline(workers=1)
    worker = next(p for p in procs if p.name == "worker-0")
    assert worker.wait(60) == 2, worker.log()[-2000:]
    error = [line for line in worker.log().splitlines() if "error:" in line]
    assert (
        error and "processor 'flatfield': setup failed: ValueError:" in error[-1] and "frames are (32, 48)" in error[-1]
    )
    assert "Traceback" not in worker.log()


def test_process_offline_runs_the_same_chain_over_a_frames_file(deployment: Deployment, tmp_path: Path) -> None:
    source = tmp_path / "frames.h5"
    frames = {k: synthetic_frame(k, H, W, "uint16", 5, reel_frames=0) for k in range(0, 40, 2)}  # ids with holes
    f = FrameFile(source, attrs={"stream": "frames", "run": "offline"}, codec=Codec("bitshuffle-lz4"))
    f.open()
    for k, frame in frames.items():
        f.append(frame, frame_id=k, t_acq_ns=k, t_recv_ns=k)
    f.close()
    rois = '[{name="spot", y=4, x=6, height=10, width=12}]'
    out = tmp_path / "roi.h5"
    proc = deployment.run_cli(
        "process", str(source), "--processor", "roi", "--set", f"workers.params.rois={rois}", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out, "r") as r:
        assert r["entry/data/frame_id"][:].tolist() == list(frames)
        assert r["entry/ledger"].attrs["complete"]
        for row, k in enumerate(frames):
            sub = frames[k][4:14, 6:18].astype(np.float64)
            assert r["entry/data/spot_sum"][row] == sub.sum() and r["entry/data/spot_max"][row] == sub.max()
    again = deployment.run_cli("process", str(source), "--processor", "roi", "-o", str(out))
    assert again.returncode == 2 and "never overwrites" in again.stderr
    # a chain, as a worker runs it: the FFT of the dark-corrected frame
    np.save(tmp_path / "dark.npy", np.full((H, W), 100, np.float32))
    chain_out = tmp_path / "chain.h5"
    proc = deployment.run_cli(
        "process",
        str(source),
        "-p",
        "flatfield",
        "-p",
        "fft",
        "--set",
        f"workers.params.flatfield.dark={tmp_path / 'dark.npy'}",
        "-o",
        str(chain_out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from framepipe.processing import spectrum

    with h5py.File(chain_out, "r") as r:
        for row, k in enumerate(frames):
            want = spectrum(frames[k].astype(np.float32) - 100, "power")
            np.testing.assert_allclose(r["entry/data/frames"][row], want, rtol=1e-5, atol=1e-2)
    assert Output("spectrum", "float32", (H, W // 2 + 1)).describe() == "float32(32, 25)"
