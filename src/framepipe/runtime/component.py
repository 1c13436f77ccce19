"""The lifecycle every component shares (after pyzmq's devices and httpx's client).

``__init__(config)`` opens nothing; ``open()`` makes the process's one ``zmq.Context`` and
calls ``setup()`` once, the one place a component makes its sockets; ``run()`` is the loop
and returns an exit code; ``ready()`` says it serves; ``stop()`` asks it to end (safe from a
signal handler); ``close()`` calls ``teardown()`` (only if ``setup()`` ran) and closes the
sockets, safe twice; ``with component:`` closes it. Loops poll their sockets with a short
timeout so a stop never waits on a blocking recv. Each step moves :attr:`Component.state`
(a :class:`~framepipe.runtime.status.State`), which status and summaries show::

    CREATED ─open()─▶ OPENING ─ready()─▶ RUNNING ─stop()─▶ STOPPING ─close()─▶ CLOSED
                                    (stop() from any of the first three)      └▶ FAILED

What a component reports is one :class:`~framepipe.runtime.status.ComponentStatus`: its
``summary()`` (identity and counters) plus ``status_parts()`` (stream peers, queue, start
sync, workers), written flat to ``--summary-json`` and served nested on ``status_port``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import Any

import zmq

from framepipe.config import Config
from framepipe.core.errors import ConfigError, ProtocolError
from framepipe.core.heap import keep_frame_buffers
from framepipe.core.logs import RateLimitedLog
from framepipe.runtime.status import (
    ComponentStatus,
    Count,
    State,
    StatusParts,
    StatusServer,
)
from framepipe.wire.protocol import MAX_HEADER_BYTES
from framepipe.wire.security import SecureContext, Trust, admit, is_exposed, make_context
from framepipe.wire.sockets import LINGER_MS

#: a rejected message's reason is logged cut to this many characters (it may quote the peer)
MAX_REJECT_TEXT = 200
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
        #: how far the main thread got (never STOPPING: see ``state``)
        self._phase = State.CREATED
        #: the one thing stop() writes: a plain bool, so a signal handler or the status
        #: thread asking to stop can never lose a race with the main thread's transitions
        self._stop_asked = False
        self._set_up = False
        #: why the component failed (set by ``__exit__``), shown by ``state`` as FAILED
        self.failure: str | None = None
        self.started_at = time.monotonic()
        self.max_payload = int(config.limits.max_message_mb * 1e6)
        restarts = os.environ.get("FRAMEPIPE_RESTARTS", "")
        if restarts.isdigit() and int(restarts):
            self.counters["restarts"] = int(restarts)  # set by the supervisor that restarted us
        #: the largest message part any socket receives (ZMQ_MAXMSGSIZE): a payload or a header
        self.max_message_part = max(self.max_payload, MAX_HEADER_BYTES)
        self._status: StatusServer | None = None
        #: who may end a stream or stop/acquire: ask it before obeying such a message
        self.trust = Trust(config)

    # ------------------------------------------------------------------ lifecycle
    @property
    def state(self) -> State:
        """Where the component is in its lifecycle (see the module docstring)."""
        phase = self._phase
        if self._stop_asked and phase in (State.CREATED, State.OPENING, State.RUNNING):
            return State.STOPPING
        return phase

    @property
    def set_up(self) -> bool:
        """True once ``setup()`` has returned: every socket it makes exists."""
        return self._set_up

    def open(self) -> None:
        """Make the context, then the sockets (``setup()``); once, later calls do nothing.

        ``socket()`` calls it too, so a component that still makes its sockets in ``run()``
        opens on its first socket.
        """
        if self._phase is not State.CREATED:
            return
        self._phase = State.OPENING
        # every tcp socket of this context is CURVE when [security] has keys (security.py)
        # connecting, it uses this role's client key ({key_dir}/<role>.key_secret)
        self.ctx = make_context(self.config.security, on_denied=self._auth_denied, role=self.role)
        self.setup()
        self._set_up = True

    def setup(self) -> None:
        """Make, bind and connect this component's sockets; called once by ``open()``.

        Attributes made here exist for ``run()``, ``teardown()`` and ``status_parts()``,
        which the base class calls only after it: they need no "is it there yet?" guard.
        """

    def teardown(self) -> None:
        """Undo what ``setup()`` did beyond making sockets (e.g. a socket monitor), before
        ``close()`` closes them; called only when ``setup()`` ran."""

    def _auth_denied(self, key: str) -> None:
        self.counters[Count.AUTH_DENIED] += 1

    def run(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the loop to end; it notices within POLL_MS. Safe from a signal handler and
        from another thread: it only sets a flag."""
        self._stop_asked = True

    @property
    def stopping(self) -> bool:
        """True once a stop was asked: loops end when they see it."""
        return self._stop_asked

    def close(self) -> None:
        """Release everything (status thread, sockets, context); safe twice."""
        if self._phase in (State.CLOSED, State.FAILED):
            return
        try:
            if self._set_up:
                self.teardown()
        finally:
            self._release()
            self._phase = State.FAILED if self.failure is not None else State.CLOSED

    def _release(self) -> None:
        if self._status is not None:
            self._status.close()  # it closes its own socket, in its own thread
            self._status = None
        for sock in self._sockets:
            if not sock.closed:
                sock.close(linger=LINGER_MS)
        self._sockets.clear()
        if self.ctx is not None:
            if isinstance(self.ctx, SecureContext):
                self.ctx.stop_authenticator()
            self.ctx.term()
            self.ctx = None

    def __enter__(self) -> Component:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # a second signal's KeyboardInterrupt is a hard stop, not a failure
        if isinstance(exc, Exception):
            self.failure = f"{type(exc).__name__}: {exc}"
        self.close()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM ask the component to stop; a second one stops it harder."""

        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stopping:
                raise KeyboardInterrupt
            self.log.info("%s received: stopping", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    # ------------------------------------------------------------------ sockets
    def socket(self, kind: int, *, sndhwm: int | None = None, rcvhwm: int | None = None) -> zmq.Socket[Any]:
        self.open()
        if self.ctx is None:
            raise RuntimeError(f"{self.name}: a socket asked for after close()")
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        # libzmq drops the connection of a peer whose message part exceeds this before
        # buffering it; no valid part is larger (decode rejects a bigger payload anyway)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_part)
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        self._sockets.append(sock)
        return sock

    def bind(self, sock: zmq.Socket[Any], url: str, what: str, *, admit_also: Iterable[str] = ()) -> None:
        """Bind ``sock`` as endpoint ``what``; with CURVE it admits only the roles
        ``wire.security.ADMITS`` names for ``what`` (plus ``admit_also``)."""
        admit(sock, what, admit_also)
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
            reason = str(e.strerror).split(" (addr=")[0]  # pyzmq appends the address as a repr
            raise ConfigError(f"cannot bind {what} on {url}: {reason}{hint}") from e
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
        self.open()
        section = status_section if status_section is not None else getattr(self.config, self.role, None)
        port = getattr(section, "status_port", None)
        if self._phase is State.OPENING:
            # before the endpoint starts: its first answer already says running
            self._phase = State.RUNNING
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
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES)  # requests are one small header
        self.bind(sock, url, "status")
        self._status = StatusServer(self, sock, self.trust)
        self._status.start()

    # ------------------------------------------------------------------ bookkeeping
    def reject(self, err: ProtocolError, where: str) -> None:
        """Count every malformed message; log at most one line per second per socket (with
        the count held back), cut to one short line: a flood from one peer, or a reason
        quoting 64 KiB of its header, never floods the log. Never raises."""
        self.rejected[err.kind] += 1
        self.rejected_on[where] += 1
        self.counters[Count.REJECTED] += 1
        reason = str(err)
        if len(reason) > MAX_REJECT_TEXT:
            reason = reason[:MAX_REJECT_TEXT] + "…"
        reason = reason.replace("\n", " ").replace("\r", " ")
        self.warn.warning(f"reject:{where}", "rejected message on %s: %s", where, reason)

    def summary(self) -> dict[str, Any]:
        """Identity and counters, flat (the ``--summary-json`` layout of
        :class:`~framepipe.runtime.status.ComponentStatus`); components add their live figures."""
        return {
            "component": self.name,
            "role": self.role,
            "host": self.config.run.host(),
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
            "state": self.state,
            "bound": list(self.bound),
            **dict(self.counters),
            Count.REJECTED_BY_KIND: dict(self.rejected),
            Count.REJECTED_BY_SOCKET: dict(self.rejected_on),
        }

    def status_parts(self) -> StatusParts:
        """The parts of this component's status beyond its counters (stream peers, queue,
        start sync, workers); called only once ``setup()`` ran, so every socket and stream
        it reads exists. Components override it to say what they have; none by default."""
        return StatusParts()

    def current_status(self, rates: dict[str, float] | None = None) -> ComponentStatus:
        """This component's status: its summary, its parts (once set up), ``rates`` if measured."""
        more: dict[str, Any] = {} if rates is None else {"rates": rates}
        if self._set_up:
            parts = self.status_parts()
            more.update((name, getattr(parts, name)) for name in parts.model_fields_set)
        return ComponentStatus.from_summary(self.summary(), **more)

    def write_summary(self, path: str | None) -> None:
        """Write :meth:`current_status` to ``path`` in its flat layout, atomically (tmp + rename)."""
        if path:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as fh:
                json.dump(self.current_status().to_summary(), fh)
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
