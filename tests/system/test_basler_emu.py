"""The real publisher on pylon's camera emulator (PYLON_CAMEMU), recorded by the real recorder.

The emulator ships in the pypylon wheel: no hardware, but the same pylon transport layer,
GenICam node map, grab engine and error paths as a real Basler camera.
"""

from __future__ import annotations

import json
import time
from typing import Any

import h5py
import numpy as np
import pytest
import zmq

from framepipe.testing.deployment import Deployment
from framepipe.wire.protocol import decode

pytest.importorskip("pypylon", reason="the basler extra (pypylon) is not installed")

pytestmark = pytest.mark.system

EMU = {"PYLON_CAMEMU": "1"}
N = 12
#: one file per acquisition and stream
ACQ_PATH = "{data_dir}/{run}_{acquisition:04d}_{acquisition_name}_{stream}.h5"


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


def test_standing_deployment_records_each_acquisitions_exposure(deployment: Deployment) -> None:
    """Per-acquisition exposure on one standing deployment: the publisher closes the camera
    and reopens it with each acquisition's settings; a setting the camera refuses is refused
    to the operator with its range, and the deployment stays idle for the next one."""
    d = deployment
    _basler(d, width=128, height=96)
    d.settings.update(
        {
            "run.name": "lab",
            "camera.count": 0,
            "publisher.subscribers": ["ventilator", "recorder-frames"],
            "recorders": [
                {"name": f"recorder-{stream}", "stream": stream, "path": ACQ_PATH} for stream in ("frames", "results")
            ],
        }
    )
    d.write_config()
    run = d.start("run", "run", "--serve", "--no-tui", env=EMU)
    run.wait_until(lambda: _acquire_ready(d), "every component connected", 120)
    # a passive watcher of the frames preview: it sees each start message, with the camera's
    # metadata as read back from the camera after the acquisition's settings were applied
    ctx = zmq.Context()
    preview = ctx.socket(zmq.SUB)
    preview.setsockopt(zmq.LINGER, 0)
    preview.setsockopt(zmq.SUBSCRIBE, b"")
    preview.connect(f"tcp://127.0.0.1:{d.settings['publisher.preview_port']}")
    try:
        for acq, (name, exposure) in enumerate([("short", 2000.0), ("long", 5000.0)], start=1):
            out = d.run_cli("acquire", "--frames", "6", "--name", name, "--set", f"camera.exposure_us={exposure:g}")
            assert out.returncode == 0, out.stdout + out.stderr
            start = _start_message(preview, acq)
            assert start["camera"]["exposure_us"] == pytest.approx(exposure), "the camera's own ExposureTimeAbs"
            with h5py.File(d.data / f"lab_{acq:04d}_{name}_frames.h5", "r") as f:
                assert f["entry/data/frame_id"][:].tolist() == list(range(6))
                assert f["entry/data/frames"].shape == (6, 96, 128)
                cam = dict(f["entry/instrument/camera"].attrs)
                asked = json.loads(f["entry"].attrs["config"])["camera"]
            # the file's camera attributes are the camera's metadata overlaid by the acquisition's
            # settings: exposure_us there is the setting (the read-back is checked above)
            assert asked["exposure_us"] == pytest.approx(exposure)
            assert cam["exposure_us"] == pytest.approx(exposure), cam
            assert cam["device_class"] == "BaslerCamEmu" and cam["serial"] == "0815-0000"
    finally:
        ctx.destroy(linger=0)

    # the emulator's ExposureTimeAbs range is 100 … 3e6 µs: 1e9 passes the config, the camera refuses it
    refused = d.run_cli("acquire", "--frames", "6", "--name", "toolong", "--set", "camera.exposure_us=1e9")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "camera.exposure_us = 1e+09 µs refused" in lines[0], lines[0]
    assert "ExposureTimeAbs accepts 100 … 3e+06 µs" in lines[0], lines[0]
    assert not list(d.data.glob("*toolong*")), "a refused acquisition created a file"

    # still idle: the next acquisition reopens the camera and takes the next id
    out = d.run_cli("acquire", "--frames", "4", "--name", "after")
    assert out.returncode == 0, out.stdout + out.stderr
    with h5py.File(d.data / "lab_0003_after_frames.h5", "r") as f:
        assert f["entry/data/frame_id"][:].tolist() == list(range(4))
        # no exposure asked, none applied: the file has the camera's own (the emulator's default)
        assert f["entry/instrument/camera"].attrs["exposure_us"] == pytest.approx(10000.0)
        assert bool(f["entry/ledger"].attrs["complete"])

    assert d.run_cli("shutdown").returncode == 0
    assert run.wait(60) == 0, run.log()[-3000:]
    assert "restarting" not in run.log(), "no process restarted"


def _acquire_ready(d: Deployment) -> bool | None:
    """Every component is connected: a request the config refuses names its setting (a
    missing component is refused first)."""
    out = d.run_cli("acquire", "--frames", "0", "--no-wait", "--set", "camera.fps=-1", timeout=20)
    return True if "camera.fps" in out.stderr else None


def _start_message(preview: zmq.Socket[bytes], acquisition: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """Acquisition ``acquisition``'s start message, read off the preview (frames skipped)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not preview.poll(int(left * 1000) + 1):
            break
        message = decode(preview.recv_multipart(), max_payload_bytes=1 << 24)
        if message.kind == "start" and message.header["acquisition"] == acquisition:
            return message.header
    raise AssertionError(f"no start message for acquisition {acquisition} on the preview within {timeout_s:g} s")


@pytest.mark.parametrize(("pixel_format", "dtype"), [("Mono8", np.uint8), ("Mono12", np.uint16)])
def test_compression_ratio_of_the_emulated_camera(deployment: Deployment, pixel_format: str, dtype: type) -> None:
    """Bytes on the wire for the emulator's frames (issue 15's ratio on the Basler emulator):
    the publisher compresses them once, the recorder stores the chunks as received and says
    the ratio in its ledger; the pixels are those the camera gave. Printed for
    docs/performance.md. (The emulator's test pattern is a smooth ramp without noise: it
    compresses far better than a real sensor's frames.)"""
    _basler(deployment, pixel_format=pixel_format, grab_strategy="one_by_one")
    deployment.settings["publisher.wire_compression"] = "bitshuffle-lz4"
    deployment.settings["transport.shared_memory"] = (
        False  # compressed frames leave the host; on it, the ring carries them raw
    )
    deployment.write_config()
    rec = deployment.start("recorder", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = deployment.start("publisher", "publisher", env=EMU)
    assert pub.wait(120) == 0, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]
    assert "wire_compression=bitshuffle-lz4" in pub.log()

    from framepipe.core import bitshuffle

    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        frames = f["entry/data/frames"]
        ledger = dict(f["entry/ledger"].attrs)
        assert frames.shape == (N, 1024, 1024) and frames.dtype == dtype
        first = frames[0]
        stored = [frames.id.get_chunk_info(k).size for k in range(N)]
        # stored as received: the chunk in the file is the one our codec makes of those pixels
        _, chunk = frames.id.read_direct_chunk((0, 0, 0))
        assert bytes(chunk) == bitshuffle.encode(first).tobytes()
    assert first.std() > 0, "the emulator's test pattern, not a blank frame"
    assert ledger["wire_encoding"] == "bitshuffle-lz4" and int(ledger["chunks_as_received"]) == N
    raw = N * first.nbytes
    ratio = float(ledger["wire_ratio"])
    assert ratio == pytest.approx(raw / sum(stored), rel=1e-3)
    assert ratio > 1.0, "the emulator's frames compress"
    report = {"camera": "basler-emulator", "pixel_format": pixel_format, "wire_ratio": ratio}
    print(json.dumps({**report, "wire_kb_per_frame": sum(stored) // N // 1024}))
