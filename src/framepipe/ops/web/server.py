"""``framepipe view`` (alias ``framepipe web``): the viewer component with the web application
in front of it, served by uvicorn from a thread of the viewer's process.

:func:`web_viewer` decides the access policy first (a server beyond loopback without a
token refuses to start: exit 2, nothing bound), then gives the viewer a :class:`WebFront`.
The front binds its socket itself, so a port in use is an ``OSError`` at start (the viewer
turns it into a one-line config error), and runs uvicorn on it in a daemon thread; closing
asks uvicorn to exit and waits a bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn
from fastapi import FastAPI

from framepipe.config import Config
from framepipe.ops.web.access import Access
from framepipe.ops.web.app import create_app
from framepipe.ops.web.deployment import DeploymentClient
from framepipe.ops.web.page import PageSettings
from framepipe.subscribers.viewer import Viewer

#: how long closing waits for uvicorn's thread (open long polls are cut after 1 s)
CLOSE_S = 5.0


class WebFront:
    """Serves an application on ``host:port`` from a thread: the viewer's
    :class:`~framepipe.subscribers.viewer.views.Front`."""

    def __init__(self, app: FastAPI, *, host: str, port: int, log: logging.Logger, client: DeploymentClient) -> None:
        self.app = app
        self.address = ("0.0.0.0" if host == "*" else host, port)
        self.log = log
        self.client = client
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by every accepted connection: a response's body is not held back (Nagle)
        # until the client acknowledges its headers, which a delayed ACK makes 40 ms
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind(self.address)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self.app,
            log_config=None,  # the process's logging stays as framepipe set it up
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            loop="asyncio",
        )
        server = uvicorn.Server(config)
        self._server = server

        def serve() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            finally:
                sock.close()

        self._thread = threading.Thread(target=serve, name="web", daemon=True)
        self._thread.start()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
            if self._thread is not None:
                self._thread.join(CLOSE_S)
                if self._thread.is_alive():
                    self.log.warning("the web server did not stop within %g s", CLOSE_S)
        self.client.close()


def web_viewer(config: Config) -> Viewer:
    """The viewer of ``config`` serving the API, the control panel and ``/metrics``.

    A :class:`~framepipe.core.errors.ConfigError` (nothing started) when the access policy
    is unsafe or the token file unreadable."""
    access = Access.from_config(config)
    settings = PageSettings(
        title=f"framepipe · {config.run.name}",
        period_ms=max(16, int(1000 / config.viewer.max_updates_per_s)),
    )

    def front(viewer: Viewer) -> WebFront:
        client = DeploymentClient(config)
        app = create_app(client, access, viewer, settings)
        return WebFront(app, host=config.viewer.host, port=config.viewer.port, log=viewer.log, client=client)

    return Viewer(config, front=front)
