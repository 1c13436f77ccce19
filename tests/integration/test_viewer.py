"""`framepipe view` in a real browser (headless Chromium) against a running pipeline.

The pipeline is real (publisher → ventilator → worker → sink, a slow synthetic camera);
the viewer joins both streams late, as a passive subscriber. Chromium loads the page and
takes screenshots; the test checks that the frame (grayscale) and its spectrum
(colour-mapped) are on the page and that both change as frames move, that the page's own
script swaps in newer images, and that the viewer never held the pipeline up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from framepipe.testing.browser import CHROMIUM, HEADLESS_FLAGS
from framepipe.testing.deployment import Deployment, Proc, free_ports

pytestmark = pytest.mark.integration

H, W = 128, 160
WINDOW = (1200, 640)


def chromium(*args: str, user_data: Path, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            *HEADLESS_FLAGS,
            f"--user-data-dir={user_data}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


#: the control panel's column of tables on the right of the page (its width and margins, page.html)
ASIDE_PX = 330 + 16 + 16


def screenshot(url: str, path: Path, tmp: Path) -> np.ndarray:
    """The page as RGB, with only the live view's two images and their captions kept: the
    control panel around them (buttons, state, tables) is painted over with the background."""
    out = chromium(f"--screenshot={path}", url, user_data=tmp / f"profile-{path.stem}")
    assert path.is_file(), f"chromium wrote no screenshot ({out.returncode}):\n{out.stderr[-3000:]}"
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (WINDOW[1], WINDOW[0])
    rgb = img[..., ::-1].astype(np.int16)
    background = rgb[-1, 0].copy()
    # a row through the images (each about 400 px wide), not through the buttons and progress bar
    image_rows = np.nonzero((gray_mask(rgb) | colour_mask(rgb)).sum(axis=1) > 350)[0]
    assert image_rows.size, "the frame is on the page"
    rgb[: max(0, image_rows.min() - 40)] = background  # the title, controls and stats line
    rgb[:, WINDOW[0] - ASIDE_PX :] = background  # the stages and acquisitions
    return rgb


def get_status(base: str, after: int | None = None) -> dict[str, Any]:
    query = f"?after={after}&timeout=10" if after is not None else ""
    with urllib.request.urlopen(f"{base}status.json{query}", timeout=20) as resp:
        return dict(json.load(resp))


def gray_mask(img: np.ndarray) -> np.ndarray:
    """The frame's pixels: exactly gray (the page's background and text never are)."""
    return (img[..., 0] == img[..., 1]) & (img[..., 1] == img[..., 2])


def colour_mask(img: np.ndarray) -> np.ndarray:
    """The colour-mapped spectrum's pixels: strongly coloured."""
    return (img.max(axis=2) - img.min(axis=2)) > 40


def start_pipeline(deployment: Deployment, camera: dict[str, Any]) -> tuple[dict[str, Proc], str]:
    """publisher → ventilator → 1 worker → sink, then the viewer; returns the processes and the page URL."""
    (http_port,) = free_ports(1)
    deployment.settings.update(
        {
            **{f"camera.{k}": v for k, v in camera.items()},
            "publisher.subscribers": ["ventilator"],  # the viewer is not on any list
            "sink.subscribers": [],
            "workers.count": 1,
            "viewer.port": http_port,
            "viewer.max_updates_per_s": 10.0,
        }
    )
    deployment.write_config()
    # binders first, then who connects: a connect to a port nobody listens on yet can, by
    # chance, get that very port as its ephemeral source port (TCP self-connect) and take it
    procs = {"sink": deployment.start("sink", "sink")}
    procs["sink"].wait_for("ready:")
    procs["publisher"] = deployment.start(
        "publisher", "publisher", "--summary-json", str(deployment.dir / "publisher.json")
    )
    procs["publisher"].wait_for("ready:")
    procs["ventilator"] = deployment.start("ventilator", "ventilator")
    procs["ventilator"].wait_for("ready:")
    procs["worker"] = deployment.start("worker", "worker")
    procs["publisher"].wait_for("all subscribers here: publishing", timeout=60)
    procs["viewer"] = deployment.start("viewer", "view")
    procs["viewer"].wait_for("ready:")
    return procs, f"http://127.0.0.1:{http_port}/"


@pytest.fixture
def pipeline(deployment: Deployment) -> tuple[Deployment, dict[str, Proc], str]:
    """The slow synthetic camera (grayscale uint16), until stopped."""
    # every frame rendered (no loop), so two screenshots never show the same frame by chance
    camera = {"count": 0, "fps": 20.0, "height": H, "width": W, "dtype": "uint16", "reel_frames": 0}
    procs, base = start_pipeline(deployment, camera)
    return deployment, procs, base


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium; CI installs it in .ci/run)",
)


@needs_chromium
@pytest.mark.timeout(240)
def test_live_view_in_a_real_browser_changes_as_frames_move(
    pipeline: tuple[Deployment, dict[str, Proc], str], tmp_path: Path
) -> None:
    assert CHROMIUM is not None, "CI must run the browser test: install chromium (.ci/run)"
    deployment, procs, base = pipeline
    viewer = procs["viewer"]
    log = viewer.wait_for("(first view)", timeout=60)
    assert "ready: http=" in log and base in log

    first = get_status(base)
    shot1 = screenshot(base, tmp_path / "view1.png", tmp_path)
    # wait (long poll on the viewer, bounded) until at least 10 frames later is on show
    status = first
    for _ in range(20):
        status = get_status(base, after=status["view_id"])
        if status["frame_id"] >= first["frame_id"] + 10:
            break
    assert status["frame_id"] >= first["frame_id"] + 10, status
    shot2 = screenshot(base, tmp_path / "view2.png", tmp_path)

    for shot in (shot1, shot2):
        gray, colour = gray_mask(shot), colour_mask(shot)
        area = shot.shape[0] * shot.shape[1]
        assert gray.sum() > 0.15 * area, "the grayscale frame is on the page"
        assert shot[gray][:, 0].std() > 20, "…and it is an image, not a flat patch"
        assert colour.sum() > 0.15 * area, "the colour-mapped spectrum is on the page"
        # frame on the left, spectrum on the right
        assert np.median(np.nonzero(gray)[1]) < WINDOW[0] / 2 < np.median(np.nonzero(colour)[1])
    both_gray = gray_mask(shot1) & gray_mask(shot2)
    assert np.mean(shot1[both_gray][:, 0] != shot2[both_gray][:, 0]) > 0.3, "the frame moved"
    # the synthetic camera's frames differ by a shift (same power) and the frequency of a vertical
    # grating: its two peaks move along the horizontal axis through the centre of the spectrum
    both_colour = colour_mask(shot1) & colour_mask(shot2)
    moved = both_colour & np.any(shot1 != shot2, axis=2)
    assert moved.sum() >= 20, "the spectrum moved"
    rows = np.nonzero(both_colour)[0]
    centre, height = (rows.min() + rows.max()) / 2, rows.max() - rows.min()
    assert abs(np.median(np.nonzero(moved)[0]) - centre) < 0.1 * height, "…where the grating's peaks are"

    # the page's own script keeps it live: after a while it shows a newer view than it loaded with
    dom = chromium("--dump-dom", "--virtual-time-budget=4000", base, user_data=tmp_path / "profile-dom").stdout
    loaded = get_status(base)
    assert 'id="frame"' in dom and "frames/s" in dom, dom[-2000:]
    img = re.search(r'id="frame"[^>]*data-loaded-with="(\d+)"[^>]*src="frame\.png\?v=(\d+)"', dom)
    assert img is not None, dom[-2000:]
    assert int(img[2]) > int(img[1]), f"the page script swapped in newer images: {img[0]}"

    # decimated to the configured rate, frames counted, nothing dropped while watching
    assert loaded["updates_per_s"] <= 10.0 + 1.0
    frames = loaded["streams"]["frames"]
    assert frames["received"] > 20 and frames["dropped"] == 0
    assert frames["gaps"] == frames["joined_at_seq"], "the only gap is the part of the run before it joined"
    assert loaded["streams"]["results"]["dropped"] == 0
    assert loaded["spectrum"].startswith("worker "), "the spectrum shown is the worker's result"

    # end of the run: the publisher stops; the viewer sees the end of stream and keeps serving
    procs["publisher"].signal(signal.SIGINT)
    assert procs["publisher"].wait(60) == 0
    viewer.wait_for("frames: end of stream", timeout=30)
    assert get_status(base)["streams"]["frames"]["state"] == "ended"
    viewer.signal(signal.SIGTERM)
    assert viewer.wait(30) == 0
    # passive: the publisher never heard of the viewer, so it never waited for it (start or end)
    assert "viewer" not in procs["publisher"].log()
    published = json.loads((deployment.dir / "publisher.json").read_text())
    assert published["published"] > frames["received"]


@needs_chromium
@pytest.mark.timeout(240)
def test_colour_video_is_shown_in_colour(deployment: Deployment, tmp_path: Path) -> None:
    """A real colour video file (cv2.VideoWriter) through the OpenCV camera, RGB uint8 frames:
    left half red, right half blue, a moving white bar."""
    assert CHROMIUM is not None, "CI must run the browser test: install chromium (.ci/run)"
    video = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (W, H))
    assert writer.isOpened()
    for k in range(400):
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[:, : W // 2, 2] = 220  # red (OpenCV writes BGR)
        bgr[:, W // 2 :, 0] = 220  # blue
        bgr[(4 * k) % H : (4 * k) % H + 8, :, :] = 255
        writer.write(bgr)
    writer.release()
    camera = {"kind": "opencv", "path": str(video), "colour": "rgb", "fps": 20.0, "count": 0}
    procs, base = start_pipeline(deployment, camera)
    procs["viewer"].wait_for("(first view)", timeout=60)

    status = get_status(base, after=get_status(base)["view_id"])
    assert status["shape"] == [H, W, 3] and status["dtype"] == "uint8"
    shot = screenshot(base, tmp_path / "colour.png", tmp_path)
    left = shot[:, : WINDOW[0] // 2].reshape(-1, 3)
    red = (left[:, 0] > 150) & (left[:, 1] < 80) & (left[:, 2] < 80)
    blue = (left[:, 2] > 150) & (left[:, 0] < 80) & (left[:, 1] < 80)
    area = left.shape[0]
    assert red.sum() > 0.05 * area and blue.sum() > 0.05 * area, "the frame keeps its red and blue halves"
    right = shot[:, WINDOW[0] // 2 : WINDOW[0] - ASIDE_PX]  # left of the control panel
    assert colour_mask(right).sum() > 0.15 * right.shape[0] * right.shape[1], "and its spectrum is shown"


def _summary(path: Path) -> dict[str, Any]:
    """A --summary-json file as it is now ({} while not written yet or being replaced)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


@pytest.mark.timeout(180)
def test_a_stopped_viewer_never_holds_up_a_lossless_stream(deployment: Deployment) -> None:
    """Ctrl-Z on the viewer for half the run: the lossless publisher goes on at its pace, its
    real subscriber (a recorder) gets every frame, and only the viewer misses frames (it
    reads the preview port, which drops for it; on the stream port XPUB_NODROP would wait)."""
    n = 2400
    (http_port,) = free_ports(1)
    deployment.settings.update(
        {
            "camera.count": n,
            "camera.fps": 200.0,
            "camera.height": 256,
            "camera.width": 256,
            "publisher.subscribers": ["recorder-frames"],
            "publisher.policy": "lossless",
            "viewer.port": http_port,
            "viewer.streams": ["frames"],
        }
    )
    deployment.write_config()
    rec_json = deployment.dir / "rec.json"
    rec = deployment.start("recorder-frames", "record", "--name", "recorder-frames", "--summary-json", str(rec_json))
    rec.wait_for("ready:")
    viewer = deployment.start("viewer", "view")
    viewer.wait_for("ready:")
    pub = deployment.start("publisher", "publisher")
    viewer.wait_for("(first view)", timeout=60)  # it is connected and receiving
    viewer.signal(signal.SIGSTOP)
    try:
        # half the run goes by with the viewer stopped: the stream does not wait for it
        rec.wait_until(lambda: _summary(rec_json).get("written", 0) >= n // 2 or None, "half the run recorded", 60)
    finally:
        viewer.signal(signal.SIGCONT)
    pub.wait_for(f"end of stream (complete) after {n} frames", timeout=60)
    assert pub.wait(60) == 0, pub.log()[-3000:]
    assert rec.wait(60) == 0, rec.log()[-3000:]
    recorded = json.loads(rec_json.read_text())
    assert recorded["written"] == n and recorded["gaps"] == 0, recorded

    viewer.wait_for("frames: end of stream", timeout=30)
    frames = get_status(f"http://127.0.0.1:{http_port}/")["streams"]["frames"]
    assert frames["dropped"] > n // 4, f"the stopped viewer should have missed most of its pause: {frames}"
    viewer.signal(signal.SIGTERM)
    assert viewer.wait(30) == 0


def test_a_run_whose_end_of_stream_was_dropped_still_ends_for_the_viewer() -> None:
    """The preview may drop an end of stream (for a viewer that is behind): the sequence
    starting again from 0 is then the end of the previous run. Real sockets, in process."""
    from framepipe.config import Config
    from framepipe.subscribers.viewer.component import StreamWatch, Viewer
    from framepipe.wire.protocol import data_header, encode_control, encode_data

    viewer = Viewer(Config())
    ctx = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    try:
        watch = StreamWatch(viewer, "frames", f"tcp://127.0.0.1:{port}", hwm=100)
        assert xpub.poll(10_000), "the viewer's subscription never arrived"
        frame = np.zeros((4, 4), np.uint16)

        def send_run(n: int, eos: bool) -> None:
            for seq in range(n):
                xpub.send_multipart(encode_data(data_header("frame", frame, frame_id=seq, seq=seq, t_acq_ns=1), frame))
            if eos:
                xpub.send_multipart(encode_control("eos", stream="frames", reason="complete", seq_last=n - 1))

        send_run(5, eos=False)  # its end of stream was dropped
        send_run(3, eos=True)
        deadline = time.monotonic() + 10
        while watch.runs_ended < 2:
            assert time.monotonic() < deadline, watch.status()
            if watch.sub.sub.poll(100):
                viewer._drain(watch)
        status = watch.status()
        assert status["received"] == 8 and status["runs_ended"] == 2 and status["gaps"] == 0, status
        assert status["state"] == "ended"
    finally:
        xpub.close(0)
        viewer.close()
        ctx.term()
