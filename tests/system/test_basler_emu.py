"""The real publisher on pylon's camera emulator (PYLON_CAMEMU), recorded by the real recorder.

The emulator ships in the pypylon wheel: no hardware, but the same pylon transport layer,
GenICam node map, grab engine and error paths as a real Basler camera.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from framepipe.testing.deployment import Deployment

pytest.importorskip("pypylon", reason="the basler extra (pypylon) is not installed")

pytestmark = pytest.mark.system

EMU = {"PYLON_CAMEMU": "1"}
N = 12


def _basler(deployment: Deployment, **camera: object) -> None:
    deployment.settings.update(
        {
            "camera.kind": "basler",
            "camera.count": N,
            "camera.width": 1024,
            "camera.height": 1024,
            "publisher.subscribers": ["recorder-frames"],
            "publisher.sync_timeout_s": 60.0,
        }
    )
    deployment.settings.update({f"camera.{k}": v for k, v in camera.items()})
    deployment.write_config()


@pytest.mark.parametrize(("pixel_format", "dtype", "top"), [("Mono8", np.uint8, 255), ("Mono12", np.uint16, 4095)])
def test_emulated_camera_recorded_with_metadata(
    deployment: Deployment, pixel_format: str, dtype: type, top: int
) -> None:
    _basler(deployment, pixel_format=pixel_format, exposure_us=2500.0, gain=1.5, grab_strategy="one_by_one")
    rec = deployment.start("recorder", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = deployment.start("publisher", "publisher", env=EMU)
    assert pub.wait(120) == 0, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]

    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        frames = f["entry/data/frames"]
        ids = f["entry/data/frame_id"][:]
        assert frames.shape == (N, 1024, 1024)
        assert frames.dtype == dtype
        assert ids.tolist() == list(range(N)), "one_by_one: every camera frame, in order"
        assert np.all(np.diff(f["entry/data/t_acq_ns"][:]) >= 0)
        first = frames[0]
        assert first.max() <= top and first.std() > 0, "the emulator's test pattern, not a blank frame"
        assert bool(f["entry/ledger"].attrs["complete"])
        # the camera's own per-frame counter and timestamp, one row per frame
        counters, stamps = f["entry/data/hw_frame_counter"][:], f["entry/data/hw_timestamp"][:]
        cam = dict(f["entry/instrument/camera"].attrs)
        assert int(f["entry/ledger"].attrs["camera_lost"]) == 0
    assert len(counters) == len(stamps) == N
    assert np.all(np.diff(counters) == 1), f"one_by_one: consecutive camera block ids {counters}"
    # the emulator's grab results carry no timestamp (GetTimeStamp() is 0): -1, "not sent";
    # a real camera's tick counter lands here
    assert np.all(stamps == -1), stamps
    assert cam["source"] == "basler"
    assert cam["device_class"] == "BaslerCamEmu"
    assert cam["serial"] == "0815-0000"
    assert cam["exposure_us"] == pytest.approx(2500.0)
    assert cam["gain_db"] == pytest.approx(1.5, abs=0.1)
    assert cam["pixel_format"] == pixel_format
    assert (cam["width"], cam["height"], cam["offset_x"], cam["offset_y"]) == (1024, 1024, 0, 0)
    assert cam["driver"].startswith("pylon ")


def test_roi_offsets_and_latest_strategy(deployment: Deployment) -> None:
    _basler(deployment, width=320, height=240, offset_x=64, offset_y=32, grab_strategy="latest")
    rec = deployment.start("recorder", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = deployment.start("publisher", "publisher", "--summary-json", str(deployment.dir / "pub.json"), env=EMU)
    assert pub.wait(120) == 0, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]
    import json

    summary = json.loads((deployment.dir / "pub.json").read_text())
    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        ids = f["entry/data/frame_id"][:]
        assert f["entry/data/frames"].shape == (N, 240, 320)
        cam = dict(f["entry/instrument/camera"].attrs)
        ledger = dict(f["entry/ledger"].attrs)
    assert (cam["offset_x"], cam["offset_y"], cam["grab_strategy"]) == (64, 32, "latest")
    assert np.all(np.diff(ids) >= 1), "frame ids increase"
    # latest-image-only may skip frames in the driver: each one is a gap in frame ids, and counted
    assert summary["camera_lost"] == int(ids[-1]) + 1 - N
    # ... and the file says so itself; those ids were never published, so they are not missing
    assert ledger["camera_lost"] == summary["camera_lost"]
    assert ledger["missing"] == 0 and bool(ledger["complete"])


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"exposure_us": 2e7}, ["camera.exposure_us = 2e+07 µs refused", "ExposureTimeAbs accepts 100 … 3e+06 µs"]),
        ({"width": 5000}, ["camera.width", "accepts 1 … 4096"]),
        ({"serial": "12345678"}, ["no camera with serial '12345678'", "cameras seen:", "serial=0815-0000"]),
    ],
)
def test_refused_setting_is_one_clear_line(
    deployment: Deployment, setting: dict[str, object], expected: list[str]
) -> None:
    _basler(deployment, **setting)
    done = deployment.run_cli("publisher", env=EMU, timeout=60)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in errors[0], errors[0]


def test_no_camera_lists_what_was_seen(deployment: Deployment) -> None:
    _basler(deployment)
    done = deployment.run_cli("publisher", env={"PYLON_CAMEMU": "0"}, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "no camera found; cameras seen: none" in done.stderr, done.stderr


def test_grab_timeout_ends_the_stream_cleanly(deployment: Deployment) -> None:
    # a 0.1 Hz frame-rate cap and a 1 s grab timeout: the first grab after the subscribers
    # are in times out, as with a camera unplugged mid-run. (The emulator's StopGrabbing
    # waits out the current frame period, so the cap is not lower: close takes up to 10 s.)
    _basler(deployment, fps=0.1, grab_timeout_s=1.0, width=64, height=64)
    rec = deployment.start("recorder", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = deployment.start("publisher", "publisher", env=EMU)
    assert pub.wait(60) == 2, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]
    log = pub.log()
    assert "camera failed after 0 frames" in log and "no frame within 1 s" in log, log
    assert "end of stream (camera error" in log
    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        assert f["entry/data/frame_id"].shape == (0,)
        assert bool(f["entry/ledger"].attrs["complete"]), "nothing published, nothing missing"


def test_cameras_command_lists_emulated_devices(deployment: Deployment) -> None:
    done = deployment.run_cli("cameras", "--emulated", "2", "--json", env={"PYLON_CAMEMU": ""}, timeout=60)
    assert done.returncode == 0, done.stderr
    import json

    found = json.loads(done.stdout)
    serials = [d["serial"] for d in found["basler"]["devices"] if d["emulated"]]
    assert serials == ["0815-0000", "0815-0001"]


def test_measure_runs_publisher_and_raw_grab(monkeypatch: pytest.MonkeyPatch) -> None:
    """The measuring function the bench calls: both rates measured, every frame received in order."""
    from framepipe.bench.camera import measure_basler

    monkeypatch.setenv("PYLON_CAMEMU", "1")
    result = measure_basler(frames=20, width=128, height=96)
    assert result["exit_code"] == 0
    assert result["published"] == result["received"] == 20 and result["in_order"]
    assert result["raw_grab_fps_before"] > 0 and result["raw_grab_fps_after"] > 0 and result["published_fps"] > 0
    assert result["ratio"] > 0


def test_emulated_camera_is_one_process_at_a_time(deployment: Deployment) -> None:
    """pylon's emulator lets two processes grab one serial and corrupts both; framepipe refuses."""
    import os
    import sys

    from framepipe.cameras.basler import lock_emulator

    if not sys.platform.startswith("linux"):
        pytest.skip("the lock is POSIX flock")
    _basler(deployment)
    fd = lock_emulator("0815-0000")
    try:
        done = deployment.run_cli("publisher", env=EMU, timeout=60)
    finally:
        if fd is not None:
            os.close(fd)
    assert done.returncode == 2, done.stderr
    assert f"emulated camera serial=0815-0000 is in use by process {os.getpid()}" in done.stderr, done.stderr
