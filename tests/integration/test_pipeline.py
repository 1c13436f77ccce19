"""500 frames through publisher → ventilator → 3 workers → sink → recorders, real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the recorder compresses with bitshuffle-lz4 by default)
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.testing.deployment import Deployment, Proc

pytestmark = pytest.mark.integration

N, H, W = 500, 64, 96


@pytest.mark.parametrize(
    ("wire", "shm"),
    [("none", True), ("bitshuffle-lz4", True), ("none", False), ("bitshuffle-lz4", False)],
    ids=["shared-memory", "shared-memory-bitshuffle-lz4", "tcp", "tcp-bitshuffle-lz4"],
)
def test_every_frame_exactly_once_and_files_exact(deployment: Deployment, wire: str, shm: bool) -> None:
    """Through shared memory (every component on this host reads the publisher's ring) and
    by TCP, raw and compressed once at the publisher (the ring then holds its chunks: workers
    decode, the frames recorder stores the chunks as they came): the same files, pixel-exact."""
    deployment.settings.update(
        {
            "transport.shared_memory": shm,
            "publisher.wire_compression": wire,
            "camera.count": N,
            "camera.height": H,
            "camera.width": W,
            "camera.dtype": "uint16",
            "camera.seed": 7,
            # every frame distinct: a frame-id mix-up cannot hide behind the synthetic reel's loop
            "camera.reel_frames": 0,
            # a results ring of 4 slots per worker, not 16: transport.result_ring_frames holds
            "transport.result_ring_frames": 4,
        }
    )
    workers, vent = run_to_the_end(deployment, workers=3)

    summary = json.loads((deployment.dir / "sink.json").read_text())
    assert summary["received"] == N and summary["missing"] == 0
    assert sum(summary["per_worker"].values()) == N
    assert len(summary["per_worker"]) == 3, "work was spread over the 3 workers"
    frames_rec = json.loads((deployment.dir / "recorder-frames.json").read_text())
    assert frames_rec["transport"] == ("shared memory" if shm else "tcp")
    for w in workers:
        assert ("frames read from shared memory" in w.log()) == shm, w.log()
    for w in workers:
        slots = re.search(r"results go through shared memory \((\d+) slots\)", w.log())
        assert bool(slots) == shm and (not slots or slots.group(1) == "4"), w.log()
    ring = re.search(r"frames from shared memory \(ring (\S+)\)", vent.log())
    assert bool(ring) == shm, vent.log()
    if ring:
        assert not Path("/dev/shm", ring.group(1)).exists(), "the publisher removed its ring"
    assert frames_rec["wire_encoding"] == wire
    assert frames_rec.get("chunks_as_received", 0) == (N if wire != "none" else 0)
    assert frames_rec.get("rejected", 0) == 0
    if wire != "none":
        assert frames_rec["wire_ratio"] > 1.0, frames_rec  # the synthetic frames are noisy: ~1.03

    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        assert f["entry/data/frames"].chunks == (1, H, W)
    check_files(deployment, N, spectra_every=7)


def run_to_the_end(deployment: Deployment, *, workers: int, prefix: tuple[str, ...] = ()) -> tuple[list[Proc], Proc]:
    """Sink, ``workers`` workers (each known to the sink before the ventilator asks it; their
    command lines after ``prefix``), both recorders, ventilator, publisher, from the current
    settings; every one exits 0. The workers and the ventilator."""
    deployment.write_config()
    sink = deployment.start("sink", "sink", "--summary-json", str(deployment.dir / "sink.json"))
    sink.wait_for("ready:")
    started = [deployment.start(f"w{i}", "worker", "--index", str(i), prefix=prefix) for i in range(workers)]
    for w in started:
        ready = re.search(r"(worker-\S+)\s+INFO\s+ready:", w.wait_for("ready:"))
        assert ready, w.log()
        sink.wait_for(f"worker {ready.group(1)} joined")
    recorders = [
        deployment.start(n, "record", "--name", n, "--summary-json", str(deployment.dir / f"{n}.json"))
        for n in ("recorder-frames", "recorder-results")
    ]
    vent = deployment.start("ventilator", "ventilator")
    pub = deployment.start("publisher", "publisher")
    for proc in [pub, vent, sink, *started, *recorders]:
        assert proc.wait(90) == 0, f"{proc.name} failed:\n{proc.log()[-3000:]}"
    return started, vent


def check_files(deployment: Deployment, n: int, *, spectra_every: int) -> None:
    """Read back by plain h5py: every frame exactly once and pixel-equal to what the camera
    made (seed 7, no reel), every result once and the spectrum of its frame; both complete."""
    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        ids = f["entry/data/frame_id"][:]
        frames = f["entry/data/frames"]
        assert sorted(ids.tolist()) == list(range(n))
        assert frames.shape == (n, H, W) and frames.dtype == np.uint16
        for row, fid in enumerate(ids):
            np.testing.assert_array_equal(frames[row], synthetic_frame(int(fid), H, W, "uint16", seed=7, reel_frames=0))
        assert bool(f["entry/ledger"].attrs["complete"])
    with h5py.File(deployment.data / "run_results.h5", "r") as f:
        ids = f["entry/data/frame_id"][:]
        spectra = f["entry/data/frames"]
        assert sorted(ids.tolist()) == list(range(n)), "each result exactly once"
        assert spectra.shape == (n, H, W // 2 + 1) and spectra.dtype == np.float32
        for row in range(0, n, spectra_every):
            sent = synthetic_frame(int(ids[row]), H, W, "uint16", seed=7, reel_frames=0)
            ref = np.abs(np.fft.rfft2(sent.astype(np.float64))) ** 2
            np.testing.assert_allclose(spectra[row], ref, rtol=1e-4, atol=ref.max() * 1e-6)
        assert bool(f["entry/ledger"].attrs["complete"])


#: runs a component with a /dev/shm of its own, on this host's network (as a container run
#: with the host's network and its own /dev/shm): the ventilator's local socket connects,
#: its rings cannot be opened
PRIVATE_SHM = ("unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"', "sh")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_workers_that_cannot_read_the_ring_take_their_tasks_by_tcp_and_nothing_is_lost(
    deployment: Deployment,
) -> None:
    """Any doubt falls back to TCP: workers whose /dev/shm is not the publisher's get
    descriptors they cannot read on the ventilator's local socket; each rejects one, takes
    its tasks by TCP from then on (results by TCP too: its host identity differs), and the
    frames rejected are re-dispatched. The same-host frames recorder still reads the ring.
    The files hold every frame exactly once, pixel-exact, and the spectra of what the
    camera produced."""
    n = 300
    deployment.settings.update(
        {
            "transport.shared_memory": True,
            "camera.count": n,
            "camera.height": H,
            "camera.width": W,
            "camera.dtype": "uint16",
            "camera.seed": 7,
            "camera.reel_frames": 0,
            "ventilator.redispatch_after_s": 1.0,
        }
    )
    workers, _ = run_to_the_end(deployment, workers=2, prefix=PRIVATE_SHM)

    for w in workers:
        log = w.log()
        assert "taking tasks by TCP" in log, log
        assert "results go through shared memory" not in log, "another /dev/shm: another host to the sink"
        # the descriptors already queued on the local socket at most: then no more come
        assert log.count("rejected message on tasks") <= 8, log
    summary = json.loads((deployment.dir / "sink.json").read_text())
    assert summary["received"] == n and summary["missing"] == 0
    assert sum(summary["per_worker"].values()) == n and len(summary["per_worker"]) == 2, summary["per_worker"]
    assert json.loads((deployment.dir / "recorder-frames.json").read_text())["transport"] == "shared memory"
    check_files(deployment, n, spectra_every=5)
