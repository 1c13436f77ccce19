"""`complete` is judged against the source (issue 18): a restarted ventilator, forged results,
a dead publisher. Real processes on loopback; every check reads the files with plain h5py
and compares them with what the publisher says the camera produced."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
import zmq

from framepipe.testing.deployment import Deployment
from framepipe.testing.files import rows

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(
        tmp_path,
        {
            "camera.width": 64,
            "camera.height": 64,
            "camera.fps": 200.0,
            "run.finish_timeout_s": 10,
            "limits.upstream_timeout_s": 4,
        },
    )
    yield d
    d.close()


def read(path: Path) -> tuple[list[int], dict[str, Any]]:
    with h5py.File(path, "r") as f:
        ids = sorted(f["entry/data/frame_id"][:].tolist())
        ledger = dict(f["entry/ledger"].attrs)
        ledger["missing_ids"] = f["entry/ledger/missing_ids"][:] if "missing_ids" in f["entry/ledger"] else []
    return ids, ledger


def published_by(log: str) -> int:
    return int(log.split("end of stream (")[1].split("after ")[1].split()[0])


def test_a_restarted_ventilator_never_leaves_a_silent_hole(deployment: Deployment) -> None:
    d = deployment
    d.settings.update({"camera.count": 900, "recorders": [{**r, "flush_frames": 1} for r in d.settings["recorders"]]})
    d.write_config()
    procs = {p.name: p for p in d.start_pipeline(workers=2)}
    results = d.data / "run_results.h5"
    procs["ventilator"].wait_until(lambda: rows(results) >= 150 or None, "results flowing", 60)
    procs["ventilator"].signal(signal.SIGKILL)
    procs["ventilator"].wait(10)
    again = d.start("ventilator-again", "ventilator")
    codes = {name: p.wait(120) for name, p in procs.items() if name != "ventilator"}
    codes["ventilator-again"] = again.wait(120)
    published = published_by(procs["publisher"].log())
    frames_ids, frames_ledger = read(d.data / "run_frames.h5")
    result_ids, ledger = read(results)
    assert frames_ids == list(range(published)) and frames_ledger["complete"]
    truly_missing = sorted(set(range(published)) - set(result_ids))
    # the file says exactly what it lacks, measured against what the camera produced
    assert ledger["expected"] == published
    assert sorted(np.asarray(ledger["missing_ids"]).tolist()) == truly_missing
    assert bool(ledger["complete"]) == (not truly_missing)
    if truly_missing:
        assert codes["sink"] != 0 and codes["recorder-results"] != 0, codes
    assert truly_missing, "the kill was mid-run: the old ventilator's frames in flight are gone"


def test_forged_results_are_rejected_and_the_real_ones_stored(deployment: Deployment) -> None:
    d = deployment
    d.settings.update({"camera.count": 400, "camera.fps": 100.0})
    d.write_config()
    procs = {p.name: p for p in d.start_pipeline(workers=1, sink_summary=d.dir / "sink.json")}
    procs["sink"].wait_for("gathering results", 60)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.connect(f"tcp://127.0.0.1:{d.settings['sink.results_in_port']}")
    fake = np.full((64, 33), 7.0, np.float32)
    # ids of real frames (their real results must not be dropped as duplicates), and one
    # huge id (no structure may grow with an id's value)
    for fid in [*range(200, 300), 2**62]:
        header = {
            "v": 1,
            "kind": "result",
            "frame_id": fid,
            "seq": fid,
            "t_acq_ns": 1,
            "outputs": [{"name": "spectrum", "dtype": "float32", "shape": [64, 33]}],
            "worker": "forger",
            "acquisition": 1,
        }
        push.send_multipart([json.dumps(header).encode(), fake.tobytes()])
    push.close()
    ctx.term()
    for p in procs.values():
        assert p.wait(120) == 0, p.log()[-2000:]
    ids, ledger = read(d.data / "run_results.h5")
    assert ids == list(range(400)) and ledger["complete"]
    with h5py.File(d.data / "run_results.h5", "r") as f:
        stored = f["entry/data/frames"][:]
    assert stored.shape[1:] != fake.shape or not np.any(np.all(stored == 7.0, axis=(1, 2))), "a forged result stored"
    assert "result without this acquisition's token" in procs["sink"].log()
    summary = json.loads((d.dir / "sink.json").read_text())
    assert summary["rejected_by_kind"]["forged"] == 101, summary["rejected_by_kind"]


def test_a_dead_publisher_ends_the_acquisition_as_upstream_lost(deployment: Deployment) -> None:
    d = deployment
    d.settings.update({"camera.count": 0, "camera.fps": 100.0})
    d.write_config()
    procs = {p.name: p for p in d.start_pipeline(workers=1)}
    frames = d.data / "run_frames.h5"
    procs["publisher"].wait_until(lambda: rows(frames) >= 50 or None, "frames flowing", 60)
    procs["publisher"].signal(signal.SIGKILL)
    # nothing waits forever: every component notices, within the configured bound
    codes = {name: p.wait(60) for name, p in procs.items() if name != "publisher"}
    assert codes["recorder-frames"] == 1 and codes["ventilator"] == 1, codes
    for path in (frames, d.data / "run_results.h5"):
        _, ledger = read(path)
        assert not ledger["complete"] and ledger["end_reason"] == "upstream lost", (path.name, ledger)
    assert "ends as upstream lost" in procs["recorder-frames"].log()
