"""The lifecycle every component shares (after pyzmq's devices and httpx's client).

``__init__(config)`` opens nothing; ``run()`` is the loop and returns an exit code;
``stop()`` asks it to end (safe from a signal handler); ``close()`` is safe twice;
``with component:`` closes it. One ``zmq.Context`` per process, made in ``open()``.
Loops poll their sockets with a short timeout so a stop never waits on a blocking recv.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import socket as pysocket
import threading
import time
from types import FrameType, TracebackType
from typing import Any

import zmq

from framepipe.config import Config
from framepipe.core.errors import ConfigError, ProtocolError
from framepipe.core.heap import keep_frame_buffers
from framepipe.core.logs import RateLimitedLog
from framepipe.runtime.status import StatusServer
from framepipe.wire.security import is_exposed, make_context
from framepipe.wire.sockets import LINGER_MS

#: how often a running component rewrites its --summary-json file (the dashboard reads it)
SUMMARY_EVERY_S = 0.5


class Component:
    """Base class of publisher, ventilator, worker, sink and subscribers."""

    role = "component"

    def __init__(self, config: Config, name: str | None = None):
        keep_frame_buffers()  # every component allocates and frees frame-sized buffers
        self.config = config
        self.name = name or self.role
        self.log = logging.getLogger(f"framepipe.{self.name}")
        self.warn = RateLimitedLog(self.log)
        self.counters: collections.Counter[str] = collections.Counter()
        self.rejected: collections.Counter[str] = collections.Counter()
        #: rejected messages by socket (where they came in)
        self.rejected_on: collections.Counter[str] = collections.Counter()
        self.bound: list[str] = []
        self.connected: list[str] = []
        self.ctx: zmq.Context[Any] | None = None
        self._sockets: list[zmq.Socket[Any]] = []
        self._stopping = False
        self._closed = False
        self.started_at = time.monotonic()
        self.max_payload = int(config.limits.max_message_mb * 1e6)
        self._status: StatusServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        if self.ctx is None:
            # every tcp socket of this context is CURVE when [security] has keys (security.py)
            self.ctx = make_context(self.config.security, on_denied=self._auth_denied)

    def _auth_denied(self, key: str) -> None:
        self.counters["auth_denied"] += 1

    def run(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the loop to end; it notices within POLL_MS."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._status is not None:
            self._status.close()  # it closes its own socket, in its own thread
            self._status = None
        for sock in self._sockets:
            if not sock.closed:
                sock.close(linger=LINGER_MS)
        self._sockets.clear()
        if self.ctx is not None:
            stop_auth = getattr(self.ctx, "stop_authenticator", None)
            if stop_auth is not None:
                stop_auth()
            self.ctx.term()
            self.ctx = None

    def __enter__(self) -> Component:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM ask the component to stop; a second one stops it harder."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self._stopping:
                raise KeyboardInterrupt
            self.log.info("%s received: stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    # ------------------------------------------------------------------ sockets
    def socket(self, kind: int, *, sndhwm: int | None = None, rcvhwm: int | None = None) -> zmq.Socket[Any]:
        self.open()
        assert self.ctx is not None
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sockets.append(sock)
        return sock

    def bind(self, sock: zmq.Socket[Any], url: str, what: str) -> None:
        if is_exposed(url) and not self.config.security.enabled:
            self.warn.warning(
                "exposed",
                "binding %s on %s without CURVE keys: anyone on this network can connect, read and send; "
                "set [security] key_dir (`framepipe keys generate DIR`, docs/deploy.md)",
                what,
                url,
            )
        try:
            sock.bind(url)
        except zmq.ZMQError as e:
            hint = " (is another framepipe running? `framepipe status`)" if e.errno == zmq.EADDRINUSE else ""
            raise ConfigError(f"cannot bind {what} on {url}: {e.strerror}{hint}") from e
        self.bound.append(f"{what}={url}")

    def connect(self, sock: zmq.Socket[Any], url: str) -> None:
        try:
            sock.connect(url)
        except zmq.ZMQError as e:
            raise ConfigError(f"cannot connect to {url}: {e.strerror}") from e
        if url not in self.connected:
            self.connected.append(url)

    def ready(self, extra: str = "", status_section: Any = None) -> None:
        """The one line tests and operators wait for (what it bound, what it connects to);
        starts the status endpoint first.

        ``status_section`` is the config section holding ``status_port`` and the host to
        bind it on; by default the section named after the component's role.
        """
        section = status_section if status_section is not None else getattr(self.config, self.role, None)
        port = getattr(section, "status_port", None)
        if section is not None and port is not None and self._status is None:
            self._start_status(section.bind_url(port))
        where = " ".join([*self.bound, *(["connected to " + " ".join(self.connected)] if self.connected else [])])
        self.log.info("ready: %s%s", where, f" {extra}" if extra else "")

    def _start_status(self, url: str) -> None:
        # bound here, so a taken port is the same clear error as any other bind; not in
        # self._sockets: from now on only the status thread touches it
        sock = self.socket(zmq.ROUTER)
        self._sockets.remove(sock)
        sock.setsockopt(zmq.LINGER, 0)
        self.bind(sock, url, "status")
        self._status = StatusServer(self, sock)
        self._status.start()

    # ------------------------------------------------------------------ bookkeeping
    def reject(self, err: ProtocolError, where: str) -> None:
        """Count and log (rate-limited) a malformed message; never raise."""
        self.rejected[err.kind] += 1
        self.rejected_on[where] += 1
        self.counters["rejected"] += 1
        self.warn.warning(f"reject:{where}", "rejected message on %s: %s", where, err)

    def summary(self) -> dict[str, Any]:
        return {
            "component": self.name,
            "role": self.role,
            "host": pysocket.gethostname(),
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            **dict(self.counters),
            "rejected_by_kind": dict(self.rejected),
            "rejected_by_socket": dict(self.rejected_on),
        }

    def write_summary(self, path: str | None) -> None:
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as fh:
                json.dump(self.summary(), fh)
            os.replace(tmp, path)


class SummaryFile:
    """Rewrites a component's summary file while it runs, so ``framepipe run`` can show it live.

    A background thread calls ``write_summary`` every ``interval_s`` (atomically: tmp file
    + rename). ``summary()`` runs in that thread while the loop changes the counters; a
    snapshot that hits a dict changing under it is skipped, the next one is taken. The
    interval stretches to 20× the time one snapshot takes, so the snapshot never costs
    the component more than 5 % of its time, however long the run.
    """

    def __init__(self, component: Component, path: str | None, interval_s: float = SUMMARY_EVERY_S):
        self.component = component
        self.path = path
        self.interval_s = interval_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SummaryFile:
        if self.path:
            self._thread = threading.Thread(target=self._loop, name="summary-file", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        wait = self.interval_s
        while not self._done.wait(wait):
            # this thread's CPU time, not wall time: waiting for the GIL is not a cost to the loop
            t0 = time.thread_time()
            try:
                self.component.write_summary(self.path)
            except Exception as e:  # a snapshot must never take the component down
                # typically a dict changed during the snapshot, or the disk hiccuped: next time
                self.component.log.debug("summary snapshot skipped: %r", e)
            wait = max(self.interval_s, 20 * (time.thread_time() - t0))
