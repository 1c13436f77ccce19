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

from framepipe.subscribers.viewer.images import INFERNO_ANCHORS


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


def _streams_text(status: dict[str, Any]) -> str:
    return " · ".join(f"{name} {s['state']}" for name, s in (status.get("streams") or {}).items())


def _acquisition_text(acquisition: dict[str, Any] | None) -> str:
    return f"acquisition {acquisition['id']} '{acquisition['name']}'" if acquisition else ""


def note_text(status: dict[str, Any]) -> str:
    """What the image boxes say when no frame is on show (the page's ``note``)."""
    state = status.get("state")
    if state == "started":
        return f"{_acquisition_text(status.get('acquisition'))} started: waiting for its first frame"
    if state in (None, "no run"):
        return "no run"
    return "ended: no frame to show" if state == "ended" else "waiting for frames…"


def stats_text(status: dict[str, Any]) -> str:
    """The live view's stats line; the page's script (``fmt``) writes the same from later statuses."""
    if status.get("view_id") is None:
        state = status.get("state") or "no run"
        first = note_text(status) if state == "started" else state
        return " · ".join(p for p in (first, _streams_text(status)) if p)
    parts = [str(status.get("state", ""))]
    if status.get("acquisition"):
        parts.append(_acquisition_text(status["acquisition"]))
    parts.append(f"frame {status['frame_id']}")
    if status.get("shape"):
        parts.append(f"{'×'.join(str(n) for n in status['shape'])} {status.get('dtype', '')}")
    for name, s in status["streams"].items():
        parts.append(
            f"{name}: {s['state']}, {s['frames_per_s']} frames/s, {s['received']} received, {s['dropped']} dropped"
        )
    parts.append(f"{status['updates_per_s']} updates/s")
    parts.append(f"decimated {status['decimated']}")
    return " · ".join(parts)


def _script_json(value: Any) -> str:
    """JSON to embed in the page's script (no ``</script>`` can end it early)."""
    return json.dumps(value).replace("<", "\\u003c")


def render_page(status: dict[str, Any], settings: PageSettings) -> str:
    """The page with ``status`` (the live view's) filled in: its stats line, its view's images
    (no image at all, never a broken one, when there is no view) and what its script starts from."""
    view_id = status.get("view_id")
    shown = view_id is not None
    return (
        page_template()
        .replace("{{TITLE}}", html.escape(settings.title))
        .replace("{{STATS}}", html.escape(stats_text(status)))
        .replace("{{SPECTRUM}}", html.escape(str(status.get("spectrum", ""))))
        .replace("{{FRAME_SRC}}", f' src="frame.png?v={view_id}"' if shown else "")
        .replace("{{SPECTRUM_SRC}}", f' src="spectrum.png?v={view_id}"' if shown else "")
        .replace("{{HIDDEN}}", "" if shown else " hidden")
        .replace("{{NOTE_HIDDEN}}", " hidden" if shown else "")
        .replace("{{NOTE}}", html.escape(note_text(status)))
        .replace("{{READOUT}}", "")
        .replace("{{INFERNO}}", ", ".join(f"rgb({r}, {g}, {b})" for r, g, b in INFERNO_ANCHORS.astype(int)))
        .replace("{{STATUS}}", _script_json(status))
        .replace("{{VIEW}}", json.dumps(view_id))
        .replace("{{PERIOD}}", str(settings.period_ms))
        .replace("{{TOKEN_FOR}}", json.dumps(settings.token_for))
    )
