"""The live view's HTTP answers, decided without a socket: routes, long-poll bounds, the page.

A fake :class:`ViewSource` stands in for the viewer component; the real server carrying
these answers is exercised by tests/integration/test_viewer.py.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest

from framepipe.subscribers.viewer.http import PageSettings, View, answer, page_template, render_page

SETTINGS = PageSettings(title="framepipe · run <1> & co", period_ms=125)


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
            return {"view_id": None, "streams": {}}
        return {
            "view_id": newest.view_id,
            **newest.meta,
            "streams": {"frames": {"frames_per_s": 4.0, "received": 30, "dropped": 2}},
            "updates_per_s": 2.5,
            "decimated": 28,
        }


def two_views() -> FakeSource:
    meta = {"frame_id": 17, "shape": [4, 6], "dtype": "uint16", "spectrum": "worker <w1> (power)"}
    return FakeSource([View(1, b"frame-1", b"spectrum-1", meta), View(2, b"frame-2", b"spectrum-2", meta)])


def test_images_of_the_view_asked_for_else_the_newest() -> None:
    source = two_views()
    assert answer(source, SETTINGS, "/frame.png?v=1").body == b"frame-1"
    assert answer(source, SETTINGS, "/spectrum.png?v=1").body == b"spectrum-1"
    # no view id, a view no longer kept, a malformed one: the newest
    for target in ("/frame.png", "/frame.png?v=9", "/frame.png?v=x"):
        reply = answer(source, SETTINGS, target)
        assert (reply.status, reply.body, reply.content_type) == (HTTPStatus.OK, b"frame-2", "image/png")


def test_no_image_yet_is_not_found_with_a_reason() -> None:
    for source in (FakeSource([]), FakeSource([View(1, None, b"spectrum-1", {})])):
        reply = answer(source, SETTINGS, "/frame.png")
        assert reply.status == HTTPStatus.NOT_FOUND and reply.explain == "no image yet" and reply.body == b""
    assert answer(FakeSource([]), SETTINGS, "/other").status == HTTPStatus.NOT_FOUND


def test_a_long_poll_waits_within_its_bounds_then_answers_the_status() -> None:
    source = two_views()
    reply = answer(source, SETTINGS, "/status.json?after=1&timeout=1.5")
    assert source.waits == [(1, 1.5)]
    assert reply.content_type == "application/json" and json.loads(reply.body)["view_id"] == 2
    answer(source, SETTINGS, "/status.json?after=2")
    assert source.waits[-1] == (2, 2.0), "2 s is the default wait"


@pytest.mark.parametrize("query", ["after=1&timeout=31", "after=1&timeout=-1", "after=x", "after=1&timeout=soon"])
def test_a_long_poll_out_of_bounds_is_refused_without_waiting(query: str) -> None:
    source = two_views()
    reply = answer(source, SETTINGS, f"/status.json?{query}")
    assert reply.status == HTTPStatus.BAD_REQUEST and source.waits == []


def test_status_without_after_does_not_wait() -> None:
    source = two_views()
    assert json.loads(answer(source, SETTINGS, "/status.json").body)["decimated"] == 28 and source.waits == []


def test_the_page_is_the_package_file_filled_in_and_escaped() -> None:
    template = page_template()
    assert template.startswith("<!doctype html>") and "{{STATS}}" in template
    page = answer(two_views(), SETTINGS, "/").body.decode()
    assert answer(two_views(), SETTINGS, "/index.html").body.decode() == page
    assert "{{" not in page
    assert "<title>framepipe · run &lt;1&gt; &amp; co</title>" in page
    # the first paint shows the newest view's images and the stats line the script would write
    assert 'src="frame.png?v=2"' in page and 'src="spectrum.png?v=2"' in page
    assert "frame 17 · 4×6 uint16 · frames: 4.0 frames/s, 30 received, 2 dropped · 2.5 updates/s" in page
    assert "worker &lt;w1&gt; (power)" in page and "let shown = 2;" in page and "const period = 125;" in page


def test_before_the_first_view_the_page_waits_with_hidden_images() -> None:
    page = render_page({"view_id": None, "streams": {}}, SETTINGS)
    assert "waiting for frames…" in page and "let shown = null;" in page
    assert 'src="frame.png" hidden' in page and 'src="spectrum.png" hidden' in page
