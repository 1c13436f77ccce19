"""The live view over HTTP: the page, its status and its two images.

Routes (all GET; ``?v=`` names a view, so a page fetches the frame and the spectrum of
the same update):

- ``/`` (or ``/index.html``): the page (``page.html``, a package file, with the first
  status filled in server-side so the first paint is complete);
- ``/status.json``: what the page shows next to the images; with ``?after=ID&timeout=S``
  a long poll that answers when a view newer than ``ID`` exists, or after ``S`` seconds;
- ``/frame.png``, ``/spectrum.png``: the images of a view (the newest without ``?v=``).

What to answer is decided by :func:`answer`, a plain function of the request target and
a :class:`ViewSource` (the :class:`~framepipe.subscribers.viewer.component.Viewer`, or a
fake in the unit tests); :class:`ViewServer` only carries it over the standard library's
``ThreadingHTTPServer`` in a thread of its own. Nothing here knows of streams or sockets
other than the HTTP one.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

#: the longest a long poll may be asked to wait (an HTTP thread is held meanwhile)
MAX_POLL_S = 30.0


@dataclasses.dataclass
class View:
    """One rendered update: a frame and its spectrum as PNGs, with what they show."""

    view_id: int
    frame_png: bytes | None
    spectrum_png: bytes | None
    meta: dict[str, Any]


class ViewSource(Protocol):
    """What the HTTP side asks of the viewer."""

    def latest_view(self, view_id: int | None = None) -> View | None:
        """The view ``view_id`` if it is still kept, else the newest (None before the first)."""

    def wait_for_view(self, after: int, timeout_s: float) -> None:
        """Return when a view newer than ``after`` exists, or after ``timeout_s``."""

    def status(self) -> dict[str, Any]:
        """The page's status (``/status.json``); asking it tells the viewer someone watches."""


@dataclasses.dataclass(frozen=True)
class Reply:
    """What to send back: a body with its type, or an error status with its explanation."""

    status: HTTPStatus
    body: bytes = b""
    content_type: str = ""
    explain: str | None = None


@dataclasses.dataclass(frozen=True)
class PageSettings:
    """What the page shows that the status does not: its title and how often it polls."""

    title: str
    period_ms: int


@functools.cache
def page_template() -> str:
    """``page.html`` as shipped in the package (read once)."""
    return resources.files("framepipe.subscribers.viewer").joinpath("page.html").read_text(encoding="utf-8")


def stats_text(status: dict[str, Any]) -> str:
    """The stats line, also rendered server-side so the first paint is complete.

    The page's script (``fmt`` in ``page.html``) writes the same line from later statuses.
    """
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
    """The page with ``status`` filled in: its stats line and, once there is one, its view's images."""
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
    )


def answer(source: ViewSource, settings: PageSettings, target: str) -> Reply:
    """The reply to ``GET target`` (path and query); may wait, for a long poll."""
    url = urlsplit(target)
    query = parse_qs(url.query)
    try:
        view_id: int | None = int(query["v"][0]) if "v" in query else None
    except ValueError:
        view_id = None  # a malformed view id: the newest view, as without one
    if url.path in ("/", "/index.html"):
        return Reply(HTTPStatus.OK, render_page(source.status(), settings).encode(), "text/html; charset=utf-8")
    if url.path == "/status.json":
        if "after" in query:  # long poll: answer when there is a newer view (or on timeout)
            try:
                after, timeout = int(query["after"][0]), float(query.get("timeout", ["2"])[0])
                if not 0 <= timeout <= MAX_POLL_S:
                    raise ValueError(timeout)
            except ValueError:
                return Reply(HTTPStatus.BAD_REQUEST, explain="after: a view id; timeout: 0 to 30 s")
            source.wait_for_view(after, timeout)
        return Reply(HTTPStatus.OK, json.dumps(source.status()).encode(), "application/json")
    if url.path in ("/frame.png", "/spectrum.png"):
        view = source.latest_view(view_id)
        png = None if view is None else view.frame_png if url.path == "/frame.png" else view.spectrum_png
        if png is None:
            return Reply(HTTPStatus.NOT_FOUND, explain="no image yet")
        return Reply(HTTPStatus.OK, png, "image/png")
    return Reply(HTTPStatus.NOT_FOUND)


class ViewServer:
    """Serves :func:`answer` on ``host:port`` from a thread; ``__init__`` opens nothing."""

    def __init__(
        self, source: ViewSource, settings: PageSettings, *, host: str, port: int, log: logging.Logger
    ) -> None:
        self.source = source
        self.settings = settings
        self.address = ("" if host == "*" else host, port)
        self.log = log
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread; an ``OSError`` if the port cannot be bound."""
        server = _Server(self.address, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="viewer-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port (safe twice, and before :meth:`start`)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class _Server(ThreadingHTTPServer):
    # a browser's open connections must not keep the process alive at exit
    daemon_threads = True

    def __init__(self, address: tuple[str, int], view: ViewServer) -> None:
        self.view = view
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    """GET only: everything is decided by :func:`answer`."""

    server: _Server
    server_version = "framepipe-viewer"

    def log_message(self, format: str, *args: Any) -> None:
        self.server.view.log.debug("http %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        view = self.server.view
        reply = answer(view.source, view.settings, self.path)
        if reply.status != HTTPStatus.OK:
            self.send_error(reply.status, reply.explain)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser moved on (a newer image): nothing to do
