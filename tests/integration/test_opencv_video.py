"""Video files written with cv2.VideoWriter (lossless FFV1) played through the real pipeline."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from framepipe.testing.deployment import Deployment

cv2 = pytest.importorskip("cv2", reason="the opencv extra is not installed")

pytestmark = pytest.mark.integration

N, H, W = 24, 48, 64


def _frames(colour: bool) -> list[np.ndarray]:
    """Distinct, textured frames (random noise plus a moving bar) as OpenCV writes them (BGR)."""
    out = []
    for k in range(N):
        img = np.random.default_rng(k).integers(0, 256, (H, W, 3) if colour else (H, W), dtype=np.uint8)
        img[:, (3 * k) % W] = 255
        out.append(img)
    return out


def _write_video(path: Path, frames: list[np.ndarray], colour: bool) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 25.0, (W, H), colour)
    assert writer.isOpened(), "this OpenCV build cannot write FFV1"
    for f in frames:
        writer.write(f)
    writer.release()


def _pipeline(deployment: Deployment, **camera: object) -> dict[str, object]:
    """Publisher on the video → ventilator → 1 worker → sink, both streams recorded; all exit codes."""
    deployment.settings.update({f"camera.{k}": v for k, v in {"kind": "opencv", **camera}.items()})
    deployment.write_config()
    procs = deployment.start_pipeline()
    return {p.name: (p.wait(120), p.log()) for p in procs}


@pytest.mark.parametrize("colour", ["gray", "rgb"])
def test_video_through_the_pipeline_pixel_exact(deployment: Deployment, tmp_path: Path, colour: str) -> None:
    written = _frames(colour == "rgb")
    video = tmp_path / "movie.avi"
    _write_video(video, written, colour == "rgb")
    codes = _pipeline(deployment, path=str(video), colour=colour, count=0)
    for name, (code, log) in codes.items():
        assert code == 0, f"{name} failed:\n{log[-3000:]}"
    # what the publisher should have sent: luminance, or the same pixels in RGB order
    expected = [f if colour == "gray" else f[:, :, ::-1] for f in written]
    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        frames = f["entry/data/frames"]
        assert f["entry/data/frame_id"][:].tolist() == list(range(N))
        assert frames.shape == ((N, H, W) if colour == "gray" else (N, H, W, 3))
        assert frames.dtype == np.uint8
        for k in range(N):
            np.testing.assert_array_equal(frames[k], expected[k], err_msg=f"frame {k}")
        assert bool(f["entry/ledger"].attrs["complete"])
        cam = dict(f["entry/instrument/camera"].attrs)
        assert cam["source"] == "opencv" and cam["input"] == str(video) and cam["frames_in_file"] == N
    with h5py.File(deployment.data / "run_results.h5", "r") as f:
        ids = f["entry/data/frame_id"][:]
        spectra = f["entry/data/frames"]
        assert sorted(ids.tolist()) == list(range(N))
        assert spectra.shape == (N, H, W // 2 + 1)
        row = int(np.flatnonzero(ids == 5)[0])
        lum = expected[5].astype(np.float64)
        if colour == "rgb":  # the worker transforms luminance of colour frames
            lum = lum @ np.array([0.299, 0.587, 0.114])
        ref = np.abs(np.fft.rfft2(lum)) ** 2
        np.testing.assert_allclose(spectra[row], ref, rtol=1e-3, atol=ref.max() * 1e-5)


def test_truncated_video_ends_the_stream_with_an_error(deployment: Deployment, tmp_path: Path) -> None:
    full = tmp_path / "full.avi"
    _write_video(full, _frames(False), False)
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    deployment.settings.update(
        {
            "camera.kind": "opencv",
            "camera.path": str(cut),
            "camera.count": 0,
            "publisher.subscribers": ["recorder-frames"],
        }
    )
    deployment.write_config()
    rec = deployment.start("recorder", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = deployment.start("publisher", "publisher")
    assert pub.wait(60) == 2, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]
    log = pub.log()
    assert f"of the {N} frames its header announces (truncated or corrupt file)" in log, log
    published = int(log.split("camera failed after ")[1].split(" frames")[0])
    assert 0 < published < N
    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        assert f["entry/data/frame_id"][:].tolist() == list(range(published)), "what was published is on disk"
        assert bool(f["entry/ledger"].attrs["complete"])


@pytest.mark.parametrize(
    ("content", "message"), [(None, "no such file"), (b"not a video" * 50, "not a video OpenCV can decode")]
)
def test_missing_or_unreadable_video_names_the_path(
    deployment: Deployment, tmp_path: Path, content: bytes | None, message: str
) -> None:
    video = tmp_path / "clip.avi"
    if content is not None:
        video.write_bytes(content)
    deployment.settings.update({"camera.kind": "opencv", "camera.path": str(video)})
    deployment.write_config()
    done = deployment.run_cli("publisher", timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"framepipe publisher: error: video file {video}: {message}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_ventilator_reads_the_video_directly(deployment: Deployment, tmp_path: Path) -> None:
    """ventilator.source = camera: no publisher, the ventilator opens the video itself."""
    written = _frames(False)
    video = tmp_path / "movie.mkv"
    _write_video(video, written, False)
    deployment.settings.update(
        {"camera.kind": "opencv", "camera.path": str(video), "camera.count": 0, "ventilator.source": "camera"}
    )
    deployment.write_config()
    procs = deployment.start_pipeline(recorders=("recorder-results",), publisher=False)
    for p in procs:
        assert p.wait(120) == 0, f"{p.name}:\n{p.log()[-3000:]}"
    with h5py.File(deployment.data / "run_results.h5", "r") as f:
        ids = f["entry/data/frame_id"][:]
        assert sorted(ids.tolist()) == list(range(N))
        row = int(np.flatnonzero(ids == N - 1)[0])
        ref = np.abs(np.fft.rfft2(written[N - 1].astype(np.float64))) ** 2
        np.testing.assert_allclose(f["entry/data/frames"][row], ref, rtol=1e-3, atol=ref.max() * 1e-5)
        assert bool(f["entry/ledger"].attrs["complete"])
