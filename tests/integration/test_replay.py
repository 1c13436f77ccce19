"""Record, replay, record again: the second file holds the first one's frames."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from framepipe.testing.deployment import Deployment

pytestmark = pytest.mark.integration

N, H, W = 40, 64, 96


def _record(deployment: Deployment, run: str, **camera: object) -> None:
    deployment.settings.update({"run.name": run, "publisher.subscribers": ["recorder-frames"]})
    deployment.settings.update({f"camera.{k}": v for k, v in camera.items()})
    deployment.write_config()
    rec = deployment.start(f"rec-{run}", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = deployment.start(f"pub-{run}", "publisher")
    assert pub.wait(90) == 0, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]


def test_replay_recording_equals_original(deployment: Deployment) -> None:
    _record(deployment, "original", kind="synthetic", count=N, height=H, width=W, dtype="uint16", seed=3)
    first = deployment.data / "original_frames.h5"
    _record(deployment, "replayed", kind="replay", path=str(first), count=0, replay_pace="fps", fps=0.0)
    with h5py.File(first, "r") as a, h5py.File(deployment.data / "replayed_frames.h5", "r") as b:
        assert b["entry/data/frames"].shape == a["entry/data/frames"].shape == (N, H, W)
        assert b["entry/data/frames"].dtype == a["entry/data/frames"].dtype
        np.testing.assert_array_equal(b["entry/data/frame_id"][:], a["entry/data/frame_id"][:])
        np.testing.assert_array_equal(b["entry/data/frames"][:], a["entry/data/frames"][:])
        assert bool(b["entry/ledger"].attrs["complete"])
        cam = dict(b["entry/instrument/camera"].attrs)
        assert cam["source"] == "replay" and cam["replay_of"] == str(first.resolve())
        assert cam["original_source"] == "synthetic" and cam["original_seed"] == 3


def test_replay_at_original_pace_through_the_pipeline(deployment: Deployment) -> None:
    """A paced recording replayed at its own pace, FFT'd by a worker: every frame once."""
    _record(deployment, "paced", kind="synthetic", count=12, height=32, width=32, dtype="uint8", fps=50.0)
    deployment.settings.update(
        {
            "run.name": "again",
            "publisher.subscribers": ["ventilator", "recorder-frames"],
            "camera.kind": "replay",
            "camera.path": str(deployment.data / "paced_frames.h5"),
            "camera.replay_pace": "original",
            "camera.replay_loop": True,
            "camera.count": 30,  # 2.5 passes over the 12 frames
        }
    )
    deployment.write_config()
    procs = deployment.start_pipeline()
    for p in procs:
        assert p.wait(120) == 0, f"{p.name}:\n{p.log()[-3000:]}"
    with (
        h5py.File(deployment.data / "paced_frames.h5", "r") as a,
        h5py.File(deployment.data / "again_frames.h5", "r") as b,
    ):
        ids = b["entry/data/frame_id"][:]
        # looping continues the ids: pass p carries id + 12 p
        assert ids.tolist() == list(range(30))
        for row in range(30):
            np.testing.assert_array_equal(b["entry/data/frames"][row], a["entry/data/frames"][row % 12])
    with h5py.File(deployment.data / "again_results.h5", "r") as f:
        assert sorted(f["entry/data/frame_id"][:].tolist()) == list(range(30))
        assert bool(f["entry/ledger"].attrs["complete"])


def test_replay_sends_the_stored_chunks_compressed(deployment: Deployment) -> None:
    """With wire compression on, replay reads the recording's chunks (read_direct_chunk) and
    sends them as they are; the new recording stores them as received: the same bytes."""
    import json

    _record(deployment, "orig", kind="synthetic", count=N, height=H, width=W, dtype="uint16", seed=3)
    first = deployment.data / "orig_frames.h5"
    deployment.settings["publisher.wire_compression"] = "bitshuffle-lz4"
    # compressed frames travel between hosts; on one, the publisher's ring carries them raw
    deployment.settings["transport.shared_memory"] = False
    deployment.settings.update({"run.name": "chunks", "publisher.subscribers": ["recorder-frames"]})
    deployment.settings.update({"camera.kind": "replay", "camera.path": str(first), "camera.count": 0})
    deployment.settings.update({"camera.replay_pace": "fps", "camera.fps": 0.0})
    deployment.write_config()
    rec = deployment.start(
        "rec-chunks", "record", "--name", "recorder-frames", "--summary-json", str(deployment.dir / "rec.json")
    )
    rec.wait_for("ready:")
    pub = deployment.start("pub-chunks", "publisher")
    assert pub.wait(90) == 0, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]
    assert "wire_compression=bitshuffle-lz4" in pub.log()
    assert json.loads((deployment.dir / "rec.json").read_text())["chunks_as_received"] == N
    with h5py.File(first, "r") as a, h5py.File(deployment.data / "chunks_frames.h5", "r") as b:
        fa, fb = a["entry/data/frames"], b["entry/data/frames"]
        assert fb.shape == fa.shape == (N, H, W)
        for row in range(N):
            assert fb.id.read_direct_chunk((row, 0, 0)) == fa.id.read_direct_chunk((row, 0, 0))
        np.testing.assert_array_equal(fb[:], fa[:])
        assert bool(b["entry/ledger"].attrs["complete"])
        assert bool(b["entry/instrument/camera"].attrs["stored_chunks_sent"])
