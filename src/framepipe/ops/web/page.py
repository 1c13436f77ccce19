"""The control panel page: ``page.html`` (a package file) filled in server-side, so its
first paint already shows the newest view and the live view's stats line.

The page's script then keeps itself current from the API (``/api/v1/...``) and the live
view's long poll (``status.json``); this module only fills in the template.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
from importlib import resources
from typing import Any


@dataclasses.dataclass(frozen=True)
class PageSettings:
    """What the page shows that no status does: its title, how often it polls, what needs a token."""

    title: str
    period_ms: int
    #: ``nothing``, ``changes`` or ``everything`` (:attr:`~framepipe.ops.web.access.Access.required`)
    token_for: str = "nothing"


@functools.cache
def page_template() -> str:
    """``page.html`` as shipped in the package (read once)."""
    return resources.files("framepipe.ops.web").joinpath("page.html").read_text(encoding="utf-8")


def stats_text(status: dict[str, Any]) -> str:
    """The live view's stats line; the page's script (``fmt``) writes the same from later statuses."""
    if status.get("view_id") is None:
        return "waiting for frames…"
    parts = [f"frame {status['frame_id']}"]
    if status.get("shape"):
        parts.append(f"{'×'.join(str(n) for n in status['shape'])} {status.get('dtype', '')}")
    for name, s in status["streams"].items():
        parts.append(f"{name}: {s['frames_per_s']} frames/s, {s['received']} received, {s['dropped']} dropped")
    parts.append(f"{status['updates_per_s']} updates/s")
    parts.append(f"decimated {status['decimated']}")
    return " · ".join(parts)


def render_page(status: dict[str, Any], settings: PageSettings) -> str:
    """The page with ``status`` (the live view's) filled in: its stats line and its view's images."""
    view_id = status.get("view_id")
    initial = f"?v={view_id}" if view_id is not None else ""
    hidden = "" if view_id is not None else " hidden"
    return (
        page_template()
        .replace("{{TITLE}}", html.escape(settings.title))
        .replace("{{STATS}}", html.escape(stats_text(status)))
        .replace("{{SPECTRUM}}", html.escape(str(status.get("spectrum", ""))))
        .replace("{{INITIAL}}", initial)
        .replace("{{HIDDEN}}", hidden)
        .replace("{{VIEW}}", json.dumps(view_id))
        .replace("{{PERIOD}}", str(settings.period_ms))
        .replace("{{TOKEN_FOR}}", json.dumps(settings.token_for))
    )
