"""The control panel in a real browser (headless Chromium over the DevTools protocol) against
a real standing deployment: Start, the progress to 100 %, the new files listed complete;
Stop during an endless acquisition; Snap; and "down", not a hung page, when the publisher
is paused. Screenshots at each step (into docs/img/ with FRAMEPIPE_DOC_SHOTS=docs/img).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from framepipe.testing.browser import CHROMIUM, Browser
from framepipe.testing.deployment import Deployment
from tests.integration.test_web_api import H, W, base_url, serve, start_web, web_settings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"),
        reason="chromium is not installed (apt-get install chromium; CI installs it in .ci/run)",
    ),
]


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path, {**web_settings(), "camera.fps": 40.0})
    yield d
    d.close()


def text(browser: Browser, selector: str) -> str:
    return str(browser.evaluate(f"document.querySelector({json.dumps(selector)}).textContent"))


def fill(browser: Browser, **values: object) -> None:
    for field, value in values.items():
        browser.evaluate(f"document.getElementById('acq-{field}').value = {json.dumps(str(value))}")


@pytest.mark.timeout(300)
def test_the_control_panel_starts_follows_stops_and_snaps(deployment: Deployment, tmp_path: Path) -> None:
    import httpx

    d = deployment
    shots = Path(os.environ.get("FRAMEPIPE_DOC_SHOTS", tmp_path))
    start_web(d)
    with httpx.Client(base_url=base_url(d), timeout=60) as api:
        serve(d, api)
    with Browser(tmp_path / "profile", width=1280, height=720) as browser:
        browser.open(base_url(d) + "/")
        browser.wait_for("document.getElementById('deploy-state').textContent === 'idle'", "the deployment idle")
        browser.wait_for("document.querySelectorAll('#stages tbody tr').length >= 5", "the stages listed")
        browser.screenshot(shots / "web-1-idle.png")

        # Start: 120 frames at 40 fps; the progress bar moves and reaches 100 %
        fill(browser, frames=120, name="panel")
        browser.click("#start")
        browser.wait_for("document.getElementById('acq-state').textContent.includes('acquiring')", "acquiring")
        browser.wait_for(
            "(() => { const v = document.getElementById('acq-progress').value; return v > 0.1 && v < 0.9; })()",
            "the progress bar part way",
        )
        browser.wait_for("document.getElementById('frame').naturalWidth > 0", "the live frame")
        browser.screenshot(shots / "web-2-acquiring.png")
        row = "#history tr[data-acquisition='1']"
        browser.wait_for(f'document.querySelector("{row}") !== null', "the acquisition listed", 60)
        assert "100 %" in text(browser, "#acq-state")
        assert browser.evaluate("document.getElementById('acq-progress').value") == 1
        listed = text(browser, row)
        assert "panel" in listed and "120" in listed and "complete" in listed and "NOT" not in listed, listed
        assert "lab_0001_panel_frames.h5 complete" in listed and "lab_0001_panel_results.h5 complete" in listed
        assert (d.data / "lab_0001_panel_frames.h5").is_file()
        browser.screenshot(shots / "web-3-complete.png")

        # Stop during an endless acquisition
        fill(browser, frames=0, name="endless")
        browser.wait_for("!document.getElementById('start').disabled", "Start enabled again")
        browser.click("#start")
        browser.wait_for(
            "/endless' acquiring: [1-9][0-9]+\\//.test(document.getElementById('acq-state').textContent)",
            "frames flowing",
            60,
        )
        browser.click("#stop")
        row = "#history tr[data-acquisition='2']"
        browser.wait_for(f'document.querySelector("{row}") !== null', "the stopped acquisition listed", 60)
        assert "stopped" in text(browser, row) and "lab_0002_endless_frames.h5 complete" in text(browser, row)

        # Snap: the frame grabbed now, its shape from the headers
        browser.click("#snap")
        browser.wait_for("document.getElementById('snap-img')?.naturalWidth > 0", "the snapped frame")
        assert f"{H}x{W} uint16" in text(browser, "#snap-box")
        browser.screenshot(shots / "web-4-stopped-and-snap.png")

        # the publisher paused: the page says down (bounded), and comes back
        publisher = next(
            c["pid"] for c in httpx.get(base_url(d) + "/api/v1/components").json() if c["role"] == "publisher"
        )
        os.kill(publisher, signal.SIGSTOP)
        try:
            browser.wait_for("document.getElementById('deploy-state').textContent === 'down'", "down", 20)
            assert "no answer" in text(browser, "#acq-state")
            assert browser.evaluate("document.getElementById('start').disabled")
            assert browser.evaluate("document.querySelectorAll('#history tbody tr').length") == 2, "kept"
            browser.screenshot(shots / "web-5-down.png")
        finally:
            os.kill(publisher, signal.SIGCONT)
        browser.wait_for("document.getElementById('deploy-state').textContent === 'idle'", "idle again", 20)
