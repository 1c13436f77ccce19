"""The live view's page in a real browser (headless Chromium over the DevTools protocol),
fed by a scripted publisher (real XPUB on loopback) whose frames we choose pixel by pixel:

idle ("no run", the stream names, no broken image), a saturating acquisition (the warning
with its count at the camera's 12-bit full scale, the colour bar's counts, the readout
under the cursor), ended (the last frame kept), a new acquisition (nothing of the last one
on the page, not even for a moment), and the frame level with its spectrum at 600, 1000
and 1600 px. Screenshots into docs/img/ with FRAMEPIPE_DOC_SHOTS=docs/img.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framepipe.testing.browser import CHROMIUM, Browser
from framepipe.testing.deployment import Deployment, Proc, free_ports
from framepipe.testing.feeder import StreamFeeder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="chromium is not installed (apt-get install chromium; CI installs it in .ci/run)",
    ),
]

H, W = 96, 128
FULL_SCALE = 4095  # Mono12 in uint16 frames
SATURATED = (slice(0, 12), slice(0, 16))  # 192 pixels at full scale


def bright_frame(k: int) -> np.ndarray:
    """A ramp below full scale (pixel (x, y) holds (x + W·y + k) mod 4000) and a saturated corner."""
    frame = ((np.arange(H * W, dtype=np.uint32).reshape(H, W) + k) % 4000).astype(np.uint16)
    frame[SATURATED] = FULL_SCALE
    return frame


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[StreamFeeder, Proc, str]]:
    """A scripted publisher on the frames preview port, and ``framepipe view`` watching it."""
    (http_port,) = free_ports(1)
    d = Deployment(
        tmp_path,
        {"viewer.port": http_port, "viewer.streams": ["frames"], "viewer.max_updates_per_s": 10.0},
    )
    camera = {"source": "test-feeder", "model": "scripted", "pixel_format": "Mono12"}
    feeder = StreamFeeder(d.settings["publisher.preview_port"], d.settings["publisher.sync_port"], camera=camera)
    try:
        viewer = d.start("viewer", "view")
        viewer.wait_for("ready:")
        yield feeder, viewer, f"http://127.0.0.1:{http_port}/"
    finally:
        d.close()
        feeder.close()


def text(browser: Browser, selector: str) -> str:
    return str(browser.evaluate(f"document.querySelector({json.dumps(selector)}).textContent"))


def visible(browser: Browser, selector: str) -> bool:
    """Rendered (not display: none, itself or above), not just without a hidden attribute."""
    return bool(browser.evaluate(f"document.querySelector({json.dumps(selector)}).getClientRects().length > 0"))


#: images on show that did not load: the broken-image icon
BROKEN = (
    "[...document.images].filter((i) => i.getClientRects().length > 0 && !(i.complete && i.naturalWidth > 0)).length"
)


def hover(browser: Browser, x: int, y: int) -> None:
    """The mouse over the middle of frame pixel (x, y), as a real pointer moves."""
    rect = browser.evaluate("(() => { const r = document.getElementById('frame').getBoundingClientRect();"
                            " return [r.x, r.y, r.width, r.height]; })()")  # fmt: skip
    at = {"x": rect[0] + (x + 0.5) * rect[2] / W, "y": rect[1] + (y + 0.5) * rect[3] / H}
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", **at})


def layout(browser: Browser, width: int) -> dict[str, Any]:
    browser.send(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    )
    browser.wait_for(f"window.innerWidth === {width}", f"the window {width} px wide")
    return dict(
        browser.evaluate(
            "(() => { const box = (s) => { const r = document.querySelector(s).getBoundingClientRect();"
            " return {top: r.top, left: r.left, right: r.right, height: r.height}; };"
            " const caps = [...document.querySelectorAll('figcaption')].map((c) => c.getBoundingClientRect().height);"
            " return {frame: box('#frame'), spectrum: box('#spectrum'), captions: caps,"
            " line: parseFloat(getComputedStyle(document.querySelector('figcaption')).lineHeight)}; })()"
        )
    )


@pytest.mark.timeout(240)
def test_idle_saturating_ended_and_new_acquisition_in_a_real_browser(
    live: tuple[StreamFeeder, Proc, str], tmp_path: Path
) -> None:
    feeder, viewer, base = live
    shots = Path(os.environ.get("FRAMEPIPE_DOC_SHOTS", tmp_path))
    with Browser(tmp_path / "profile", width=1000, height=760) as browser:
        # idle: nothing has run
        browser.open(base)
        browser.wait_for("document.getElementById('deploy-state').textContent !== '…'", "the page's first refresh")
        stats = text(browser, "#stats")
        assert stats == "no run · frames waiting", stats
        assert text(browser, "#frame-note") == "no run" and visible(browser, "#frame-note")
        assert not visible(browser, "#frame") and not visible(browser, "#spectrum")
        assert browser.evaluate(BROKEN) == 0, "no broken-image icon"
        assert "waiting, waiting" not in str(browser.evaluate("document.body.innerText"))
        browser.screenshot(shots / "live-1-no-run.png")

        # a saturating acquisition: 192 of 96×128 pixels at the 12-bit full scale
        feeder.wait_for_subscriptions(1)
        feeder.start(name="bright")
        frames = [bright_frame(k) for k in range(20)]
        for k, frame in enumerate(frames):
            feeder.send(k, frame)
        browser.wait_for("document.getElementById('stats').textContent.includes('frame 19 ')", "the newest frame")
        stats = text(browser, "#stats")
        assert stats.startswith("streaming · acquisition 1 'bright' · frame 19 · 96×128 uint16"), stats
        assert visible(browser, "#saturation")
        assert text(browser, "#saturation") == "⚠ 192 pixels saturated (1.6 %) at 4,095"
        lo, hi = np.percentile(frames[19], (0.5, 99.5))
        assert text(browser, "#frame-lo") == f"{round(lo):,}" and text(browser, "#frame-hi") == f"{round(hi):,} counts"
        assert browser.evaluate(BROKEN) == 0

        # the readout under the cursor: the frame's own counts, at full resolution
        hover(browser, 100, 50)
        expected = f"x 100 · y 50 · {int(frames[19][50, 100]):,} counts"
        browser.wait_for(f"document.getElementById('readout').textContent === {json.dumps(expected)}", expected)
        hover(browser, 3, 4)
        browser.wait_for(
            "document.getElementById('readout').textContent === 'x 3 · y 4 · 4,095 counts · saturated'",
            "a saturated pixel's readout",
        )
        browser.screenshot(shots / "live-2-saturated.png")

        # ended: the last frame stays, the stream says ended
        feeder.finish(n_byes=0)
        browser.wait_for("document.getElementById('stats').textContent.startsWith('ended')", "ended")
        stats = text(browser, "#stats")
        assert "frames: ended" in stats and "frame 19 " in stats, stats
        assert visible(browser, "#frame") and browser.evaluate("document.getElementById('frame').naturalWidth") > 0
        assert browser.evaluate(BROKEN) == 0
        browser.screenshot(shots / "live-3-ended.png")

        # a new acquisition: every stats line from its start on belongs to it (recorded as it changes)
        browser.evaluate(
            "window.seen = []; const stats = document.getElementById('stats');"
            " new MutationObserver(() => window.seen.push(stats.textContent))"
            ".observe(stats, {childList: true, characterData: true, subtree: true}); 1"
        )
        feeder.next_acquisition()
        feeder.start(name="dark")
        browser.wait_for(
            "document.getElementById('stats').textContent.includes(\"acquisition 2 'dark' started\")", "started"
        )
        assert text(browser, "#frame-note") == "acquisition 2 'dark' started: waiting for its first frame"
        assert not visible(browser, "#frame") and not visible(browser, "#saturation")
        for k in range(5):
            feeder.send(k, np.full((H, W), 100 + k, np.uint16))
        browser.wait_for("document.getElementById('stats').textContent.includes(\"'dark' · frame 4 \")", "acq 2 shown")
        assert not visible(browser, "#saturation") and visible(browser, "#frame")
        seen = [str(s) for s in browser.evaluate("window.seen")]
        after_start = seen[next(i for i, s in enumerate(seen) if "acquisition 2" in s) :]
        assert after_start and not [s for s in after_start if "acquisition 1" in s or "frame 19" in s], seen
        decimated = int(text(browser, "#stats").rsplit("decimated ", 1)[1])
        assert decimated <= 5, "counted for this acquisition only"

        # the frame and its spectrum level and alike at any width, captions on one line
        feeder.finish(n_byes=0)
        for width in (600, 1000, 1600):
            box = layout(browser, width)
            frame, spectrum = box["frame"], box["spectrum"]
            assert abs(frame["top"] - spectrum["top"]) < 1 and abs(frame["height"] - spectrum["height"]) < 1, box
            assert frame["right"] < spectrum["left"], box
            assert all(h <= box["line"] + 1 for h in box["captions"]), f"a caption wrapped at {width} px: {box}"
            browser.screenshot(tmp_path / f"live-4-{width}px.png")
    viewer.signal(15)
    assert viewer.wait(30) == 0


@pytest.mark.timeout(120)
def test_an_ended_runs_frame_rate_is_gone_at_once(live: tuple[StreamFeeder, Proc, str]) -> None:
    """While frames come the view shows their rate; when the run ends the rate is 0 at once
    (it used to linger for up to a second, on a stream that said ended)."""
    import httpx

    feeder, _viewer, base = live
    feeder.wait_for_subscriptions(1)
    feeder.start(name="paced")

    def frames_stream(client: httpx.Client) -> dict[str, Any]:
        return dict(client.get(base + "api/v1/view", timeout=10).json()["streams"]["frames"])

    with httpx.Client() as client:
        deadline = time.monotonic() + 60
        k, stream = 0, frames_stream(client)
        while stream["frames_per_s"] == 0:  # a frame per request, until a whole rate window is counted
            assert time.monotonic() < deadline, f"no frame rate after {k} frames: {stream}"
            feeder.send(k, bright_frame(k))
            k, stream = k + 1, frames_stream(client)
        feeder.finish(n_byes=0)
        while stream["state"] != "ended":
            assert time.monotonic() < deadline, f"the run never ended on the view: {stream}"
            stream = frames_stream(client)
        assert stream["frames_per_s"] == 0, stream
