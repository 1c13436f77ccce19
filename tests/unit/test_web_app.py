"""The web application's answers: the page, the live view's routes and long-poll bounds,
refusals mapped to statuses with the publisher's one line, and who may read or change
(:class:`Access`). Served by the real front (uvicorn in a thread, on loopback), asked with httpx.

Fakes stand in for the viewer and the deployment; the real ones are exercised by
tests/integration/test_web_api.py, test_web_page.py and test_viewer.py.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from framepipe.config import Config
from framepipe.core.errors import ConfigError
from framepipe.ops.control import ControlError, ControlRefused
from framepipe.ops.web.access import Access
from framepipe.ops.web.app import create_app
from framepipe.ops.web.page import PageSettings, page_template, render_page
from framepipe.ops.web.server import WebFront
from framepipe.subscribers.viewer.views import View
from framepipe.testing.ports import free_ports

SETTINGS = PageSettings(title="framepipe · run <1> & co", period_ms=125)
TOKEN = "t" * 32


class FakeSource:
    """Views by id and a status; records the long polls it was asked to wait for."""

    def __init__(self, views: list[View]) -> None:
        self.views = {v.view_id: v for v in views}
        self.waits: list[tuple[int, float]] = []

    def latest_view(self, view_id: int | None = None) -> View | None:
        if view_id is not None and view_id in self.views:
            return self.views[view_id]
        return self.views[max(self.views)] if self.views else None

    def wait_for_view(self, after: int, timeout_s: float) -> None:
        self.waits.append((after, timeout_s))

    def status(self) -> dict[str, Any]:
        newest = self.latest_view()
        if newest is None:
            return {"view_id": None, "state": "no run", "streams": {"frames": {"state": "waiting"}}}
        return {
            "view_id": newest.view_id,
            "state": "streaming",
            **newest.meta,
            "streams": {"frames": {"state": "streaming", "frames_per_s": 4.0, "received": 30, "dropped": 2}},
            "updates_per_s": 2.5,
            "decimated": 28,
        }


class FakeDeployment:
    """Answers as a deployment would; ``refuse`` makes the next change raise it."""

    def __init__(self) -> None:
        self.refuse: Exception | None = None
        self.started: list[tuple[int, str | None, dict[str, Any]]] = []

    def acquire(self, frames: int, name: str | None, camera: dict[str, Any]) -> int:
        if self.refuse is not None:
            raise self.refuse
        self.started.append((frames, name, camera))
        return len(self.started)

    def stop(self) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        return {"state": "draining", "acquisition": None, "history": []}

    def snap(self) -> tuple[np.ndarray, dict[str, Any]]:
        return np.arange(12, dtype=np.uint16).reshape(3, 4), {"frame_id": 7}

    def close(self) -> None:
        pass


def two_views() -> FakeSource:
    meta = {"frame_id": 17, "shape": [4, 6], "dtype": "uint16", "spectrum": "worker <w1> (power)"}
    values = np.arange(24, dtype=np.uint16).reshape(4, 6)
    return FakeSource(
        [View(1, b"frame-1", b"spectrum-1", meta), View(2, b"frame-2", b"spectrum-2", meta, values=values)]
    )


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[httpx.Client, FakeDeployment]]]:
    """Serves an application over the fakes on a free loopback port; closes what it served."""
    opened: list[tuple[WebFront, httpx.Client]] = []

    def start(source: FakeSource | None = None, access: Access | None = None) -> tuple[httpx.Client, FakeDeployment]:
        deployment = FakeDeployment()
        app = create_app(
            deployment,  # type: ignore[arg-type]
            access or Access(token=None, open_reads=True, exposed=False),
            source or two_views(),
            SETTINGS,
        )
        (port,) = free_ports(1)
        front = WebFront(app, host="127.0.0.1", port=port, log=logging.getLogger("test"), client=deployment)  # type: ignore[arg-type]
        front.start()
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        opened.append((front, api))
        return api, deployment

    yield start
    for front, api in opened:
        api.close()
        front.close()


def test_images_of_the_view_asked_for_else_the_newest(
    serve: Callable[..., tuple[httpx.Client, FakeDeployment]],
) -> None:
    api, _ = serve()
    assert api.get("/frame.png?v=1").content == b"frame-1"
    assert api.get("/api/v1/view/spectrum.png?v=1").content == b"spectrum-1"
    for target in ("/frame.png", "/frame.png?v=9", "/api/v1/view/frame.png"):
        r = api.get(target)
        assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"frame-2", "image/png")
        assert r.headers["cache-control"] == "no-store"


def test_no_image_yet_is_not_found_with_a_reason(serve: Callable[..., tuple[httpx.Client, FakeDeployment]]) -> None:
    for source in (FakeSource([]), FakeSource([View(1, None, b"spectrum-1", {})])):
        api, _ = serve(source)
        r = api.get("/frame.png")
        assert r.status_code == 404 and r.json() == {"detail": "no image yet"}


def test_a_long_poll_waits_within_its_bounds_then_answers_the_status(
    serve: Callable[..., tuple[httpx.Client, FakeDeployment]],
) -> None:
    source = two_views()
    api, _ = serve(source)
    assert api.get("/status.json?after=1&timeout=1.5").json()["view_id"] == 2
    assert source.waits == [(1, 1.5)]
    api.get("/api/v1/view?after=2")
    assert source.waits[-1] == (2, 2.0), "2 s is the default wait"


@pytest.mark.parametrize("query", ["after=1&timeout=31", "after=1&timeout=-1", "after=x", "after=1&timeout=soon"])
def test_a_long_poll_out_of_bounds_is_refused_without_waiting(
    query: str, serve: Callable[..., tuple[httpx.Client, FakeDeployment]]
) -> None:
    source = two_views()
    api, _ = serve(source)
    r = api.get(f"/status.json?{query}")
    assert r.status_code == 422 and source.waits == []
    assert isinstance(r.json()["detail"], str) and "\n" not in r.json()["detail"]


def test_the_page_is_the_package_file_filled_in_and_escaped(
    serve: Callable[..., tuple[httpx.Client, FakeDeployment]],
) -> None:
    template = page_template()
    assert template.startswith("<!doctype html>") and "{{STATS}}" in template
    api, _ = serve()
    page = api.get("/").text
    assert api.get("/index.html").text == page
    assert "{{" not in page
    assert "<title>framepipe · run &lt;1&gt; &amp; co</title>" in page
    assert 'src="frame.png?v=2"' in page and 'src="spectrum.png?v=2"' in page
    assert (
        "streaming · frame 17 · 4×6 uint16 · frames: streaming, 4.0 frames/s, 30 received, 2 dropped · 2.5 updates/s"
        in page
    )
    assert "worker &lt;w1&gt; (power)" in page and "let shown = 2;" in page and "const period = 125;" in page
    assert 'const tokenFor = "nothing";' in page


def test_before_the_first_view_the_page_says_no_run_and_asks_for_no_image() -> None:
    page = render_page({"view_id": None, "state": "no run", "streams": {"frames": {"state": "waiting"}}}, SETTINGS)
    assert '<div id="stats">no run · frames waiting</div>' in page and "let shown = null;" in page
    assert 'data-loaded-with="null" hidden>' in page and '<img id="spectrum" alt="power spectrum" hidden>' in page
    assert 'class="note">no run</div>' in page and "frame.png" not in page.split("<script>")[0]


def test_the_status_embedded_in_the_script_cannot_end_it() -> None:
    page = render_page({"view_id": None, "state": "no run", "streams": {}, "x": "</script><b>"}, SETTINGS)
    assert "</script><b>" not in page and "\\u003c/script>\\u003cb>" in page


def test_the_pixel_readout_gives_one_count_of_the_view_asked_for(
    serve: Callable[..., tuple[httpx.Client, FakeDeployment]],
) -> None:
    api, _ = serve()
    r = api.get("/api/v1/view/pixel", params={"v": 2, "x": 5, "y": 3})
    assert r.status_code == 200 and r.json() == {"view_id": 2, "frame_id": 17, "x": 5, "y": 3, "value": 23}
    assert api.get("/pixel.json", params={"x": 0, "y": 1}).json()["value"] == 6  # the newest view
    assert api.get("/pixel.json", params={"v": 2, "x": 6, "y": 0}).status_code == 404  # outside the frame
    assert api.get("/pixel.json", params={"v": 1, "x": 0, "y": 0}).status_code == 404  # no values kept
    assert api.get("/pixel.json", params={"x": -1, "y": 0}).status_code == 422


@pytest.mark.parametrize(
    ("refusal", "status"),
    [
        (ControlRefused("busy: acquiring (acquisition 3 'a')"), 409),
        (ControlRefused("a component is missing: recorder-frames (not connected to the frames stream)"), 409),
        (ControlRefused("camera.fps: must be ≥ 0"), 422),
        (ControlError("no answer from the publisher's control endpoint tcp://127.0.0.1:1 within 2 s"), 503),
    ],
)
def test_a_refused_acquisition_is_a_4xx_with_the_publishers_line(
    refusal: Exception, status: int, serve: Callable[..., tuple[httpx.Client, FakeDeployment]]
) -> None:
    api, deployment = serve()
    deployment.refuse = refusal
    r = api.post("/api/v1/acquisitions", json={"frames": 3})
    assert r.status_code == status
    assert r.json()["detail"].endswith(str(refusal))


def test_an_accepted_acquisition_and_a_bad_body(serve: Callable[..., tuple[httpx.Client, FakeDeployment]]) -> None:
    api, deployment = serve()
    r = api.post("/api/v1/acquisitions", json={"frames": 3, "name": "x", "camera": {"exposure_us": 100.0, "fps": 5}})
    assert r.status_code == 201 and r.json() == {"id": 1, "url": "/api/v1/acquisitions/1"}
    assert deployment.started == [(3, "x", {"exposure_us": 100.0, "fps": 5})]
    for body, field in (({"frames": -1}, "frames"), ({}, "frames"), ({"frames": 1, "name": ""}, "name")):
        r = api.post("/api/v1/acquisitions", json=body)
        assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: "), r.text


def test_snap_as_npy_keeps_the_raw_values(serve: Callable[..., tuple[httpx.Client, FakeDeployment]]) -> None:
    api, _ = serve()
    r = api.get("/api/v1/snap.npy")
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), np.arange(12, dtype=np.uint16).reshape(3, 4))
    assert r.headers["x-frame-id"] == "7" and r.headers["x-frame-shape"] == "3x4"
    assert api.get("/api/v1/snap.png").content.startswith(b"\x89PNG")


def test_with_a_token_changes_need_the_header_and_reads_the_header_or_cookie(
    serve: Callable[..., tuple[httpx.Client, FakeDeployment]],
) -> None:
    api, _ = serve(access=Access(token=TOKEN, open_reads=False, exposed=True))
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert api.get("/api/v1/view").status_code == 401
    assert api.get("/api/v1/view", headers=good).status_code == 200
    api.cookies.set("framepipe_token", TOKEN)  # as the page sets it
    assert api.get("/api/v1/view").status_code == 200
    assert api.post("/api/v1/stop").status_code == 401, "the cookie alone changes nothing"
    assert api.post("/api/v1/stop", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert api.post("/api/v1/stop", headers=good).status_code == 200
    page = api.get("/").text
    assert 'const tokenFor = "everything";' in page and "let shown = null;" in page, "no data in the open page"


def config(tmp_path: Path, host: str, token: str | None = None, open_reads: bool = False) -> Config:
    cfg = Config()
    cfg.viewer.host = host
    cfg.web.open_reads = open_reads
    if token is not None:
        (tmp_path / "token").write_text(token + "\n")
        cfg.web.token_file = str(tmp_path / "token")
    return cfg


def test_access_loopback_open_beyond_it_a_token_or_no_start(tmp_path: Path) -> None:
    assert Access.from_config(config(tmp_path, "127.0.0.1")).required == "nothing"
    assert Access.from_config(config(tmp_path, "127.0.0.1", TOKEN)).required == "changes"
    assert Access.from_config(config(tmp_path, "*", TOKEN)).required == "everything"
    assert Access.from_config(config(tmp_path, "*", TOKEN, open_reads=True)).required == "changes"
    for host in ("*", "192.168.1.5", "lab-pc"):
        with pytest.raises(ConfigError, match=r"web\.token_file"):
            Access.from_config(config(tmp_path, host))
    with pytest.raises(ConfigError, match="too short"):
        Access.from_config(config(tmp_path, "*", "short"))
    cfg = config(tmp_path, "*")
    cfg.web.token_file = str(tmp_path / "absent")
    with pytest.raises(ConfigError, match="cannot read the token file"):
        Access.from_config(cfg)
