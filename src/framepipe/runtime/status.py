"""A component's status: the one model of it, and the endpoint that serves it.

The model (what any reader of a component's status sees)::

    ComponentStatus            identity: name, role, host, pid, uptime_s, state, bound
      ├── counters             Count names (and each role's live figures), as summary() has them
      ├── rates                "<counter>_per_s", over the last second (the endpoint only)
      └── StatusParts          optional: peers (StreamPeers), queue (Queue), sync (StartSync), workers

It has two layouts, both stable on disk and on the wire: :meth:`ComponentStatus.to_summary`
is the flat ``--summary-json`` file (counters at the top level, ``component`` for the name)
that ``framepipe run``, the dashboard and the bench read; :meth:`ComponentStatus.to_reply`
is the nested answer of the status endpoint. Both parse back with ``from_summary`` /
``model_validate``. It is a pydantic model, not a dataclass, because it is read back from
files and from other hosts: validation at that boundary is the point (as for the config).

Server side: :class:`StatusServer` is a ROUTER socket served by a background thread that a
component starts when it is ready (on ``status_port`` of its config section). The socket is
bound by the component and then used only by that thread; the thread asks its
:class:`StatusSource` (the component) for a :class:`ComponentStatus` (counters are plain ints
in dicts: a copy is consistent enough for a status line) and never touches the component's
own sockets. It answers two requests, both ``StatusRequest`` messages (wire/messages.py):

- ``{"cmd": "status"}`` → ``{"ok": true, "status": ComponentStatus.to_reply()}``
- ``{"cmd": "stop"}``   → refused: the endpoint is read-only. A stop that drains goes to the
  publisher's control endpoint (``framepipe stop``, ``framepipe shutdown``), which only
  operators reach; a status port that stopped one component at a time lost the end of a run.

Anything else is refused with an ``ErrorReply`` whose ``reason`` says why.

Workers have no endpoint: the sink hears their heartbeats and reports them. The client side
(``framepipe status``) is :mod:`framepipe.ops.status`. This module knows nothing of
:class:`~framepipe.runtime.component.Component`: it serves whatever satisfies
:class:`StatusSource`.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import zmq
from pydantic import BaseModel, ConfigDict

from framepipe.core.counters import Count, steady_rate
from framepipe.core.errors import ProtocolError
from framepipe.core.logs import RateLimitedLog
from framepipe.wire.broadcast import Broadcast
from framepipe.wire.messages import ErrorReply, Reply, StatusReply, StatusRequest
from framepipe.wire.protocol import decode, encode_control
from framepipe.wire.security import Trust

#: how often the server samples counters to compute rates
RATE_WINDOW_S = 1.0
#: sink summaries list missing ids; a status answer keeps it short
MAX_LIST = 20
MAX_REQUEST_BYTES = 4096
#: after an unexpected failure the endpoint pauses this long before serving on
FAILURE_PAUSE_S = 0.05


# ---------------------------------------------------------------------------- names


class State(enum.StrEnum):
    """Where a component is in its lifecycle (set by the Component base class).

    ``CREATED`` (``__init__``, nothing open) → ``OPENING`` (``open()``: the context, then
    ``setup()`` makes the sockets) → ``RUNNING`` (``ready()``: bound, serving) →
    ``STOPPING`` (``stop()`` was asked, from any of the earlier ones) → ``CLOSED``
    (``close()``), or ``FAILED`` when an exception ended it.
    """

    CREATED = "created"
    OPENING = "opening"
    RUNNING = "running"
    STOPPING = "stopping"
    CLOSED = "closed"
    FAILED = "failed"


class Observed(enum.StrEnum):
    """What the asking side concludes about a component that gave no status of its own."""

    #: no answer within the timeout, or a refused / malformed one
    DOWN = "down"
    #: a worker the sink heard from recently (workers have no endpoint)
    SEEN = "seen"
    #: a worker the sink declared lost
    LOST = "lost"
    #: the component answered but its figures changed too fast to copy
    BUSY = "busy"


class Role(enum.StrEnum):
    """The components of the pipeline, in the order frames flow through them."""

    PUBLISHER = "publisher"
    VENTILATOR = "ventilator"
    WORKER = "worker"
    SINK = "sink"
    RECORDER = "recorder"
    VIEWER = "viewer"


#: the counter that says "frames through this stage", per role
THROUGHPUT: dict[str, Count] = {
    Role.PUBLISHER: Count.PUBLISHED,
    Role.VENTILATOR: Count.ACCEPTED,
    Role.WORKER: Count.PROCESSED,
    Role.SINK: Count.RECEIVED,
    Role.RECORDER: Count.WRITTEN,
    Role.VIEWER: Count.RECEIVED_FRAMES,
}

#: counters that are clock readings, not counts: no rate
_TIMESTAMPS = frozenset({Count.FIRST_NS, Count.LAST_NS})


# ---------------------------------------------------------------------------- model


class StreamPeers(BaseModel):
    """Who is on the broadcast stream a component publishes (publisher: frames, sink: results)."""

    subscribers: list[str] = []
    finished: list[str] = []
    subscriptions: int = 0

    @classmethod
    def of(cls, stream: Broadcast) -> StreamPeers:
        """Who is on ``stream`` now: said hello, said bye, subscriptions the XPUB saw."""
        return cls(subscribers=sorted(stream.hellos), finished=sorted(stream.byes), subscriptions=stream.subscriptions)


class Queue(BaseModel):
    """Frames held by a component between taking and handing on (ventilator: its window)."""

    in_flight: int | None = None
    waiting: int | None = None


class StartSync(BaseModel):
    """A subscriber's start sync with its publisher: round trip and clock offset."""

    rtt_ns: int | None = None
    clock_offset_ns: int | None = None

    @classmethod
    def of(cls, welcome: Mapping[str, Any]) -> StartSync | None:
        """From a subscription's welcome (``Subscription.welcome``); None before the hello."""
        if "rtt_ns" not in welcome:
            return None
        return cls(**{k: welcome[k] for k in ("rtt_ns", "clock_offset_ns") if k in welcome})


class StatusParts(BaseModel):
    """The parts only some components have; what ``Component.status_parts()`` gives."""

    model_config = ConfigDict(extra="ignore")

    peers: StreamPeers | None = None
    queue: Queue | None = None
    sync: StartSync | None = None
    #: worker name → seconds since last heard (sink), or None when only the name is known
    workers: dict[str, float | None] | None = None


#: summary keys that are identity or parts, not counters (``component`` is the name)
_SUMMARY_FIELDS = ("component", "role", "host", "pid", "uptime_s", "state", "bound", *StatusParts.model_fields)


class ComponentStatus(StatusParts):
    """One component's status: identity, counters, rates and the parts it has.

    Only the fields that were given are written out (``exclude_unset``), so an answer or a
    file read back and written again is what it was.
    """

    name: str
    role: str
    host: str = ""
    pid: int | None = None
    uptime_s: float | None = None
    state: State | Observed | None = None
    bound: list[str] = []
    #: every counter and live figure of ``summary()``, by name (see :class:`Count`)
    counters: dict[str, Any] = {}
    #: ``<counter>_per_s`` over the last second: only the endpoint measures them
    rates: dict[str, float] = {}
    # added by the asking side
    url: str | None = None
    error: str | None = None
    last_heard_s: float | None = None

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], **more: Any) -> ComponentStatus:
        """From a flat summary (a ``--summary-json`` file, ``Component.summary()``)."""
        fields = {k: summary[k] for k in _SUMMARY_FIELDS if k in summary}
        fields["name"] = fields.pop("component", "?")
        fields.setdefault("role", "?")
        counters = {k: v for k, v in summary.items() if k not in _SUMMARY_FIELDS}
        return cls.model_validate({**fields, "counters": counters, **more})

    def to_summary(self) -> dict[str, Any]:
        """The flat layout of the ``--summary-json`` file: counters at the top level."""
        out = self.model_dump(exclude_unset=True, exclude={"counters", "rates"})
        return {"component": out.pop("name"), **out, **self.counters}

    def to_reply(self, max_list: int | None = None) -> dict[str, Any]:
        """The nested layout of the status endpoint's answer; lists among the counters cut
        to ``max_list`` items and a "... N more" (the endpoint cuts them to MAX_LIST)."""
        out = self.model_dump(exclude_unset=True)
        if "counters" in out and max_list is not None:
            out["counters"] = {
                k: [*v[:max_list], f"... {len(v) - max_list} more"] if isinstance(v, list) and len(v) > max_list else v
                for k, v in out["counters"].items()
            }
        return out

    def count(self, key: str) -> int | None:
        """A counter's value when it is an int (not a list or a figure of another type)."""
        value = self.counters.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def lifetime_rate(self, key: str) -> float | None:
        """``key`` per second from the first frame to the last (``first_ns``, ``last_ns``):
        (n - 1) intervals over that time; None before two timestamps apart."""
        return steady_rate(self.count(key), self.count(Count.FIRST_NS), self.count(Count.LAST_NS))


# ---------------------------------------------------------------------------- server


class StatusSource(Protocol):
    """What the status endpoint needs of the component it serves (a Component satisfies it)."""

    name: str
    role: str
    log: logging.Logger
    counters: collections.Counter[str]

    def current_status(self, rates: dict[str, float] | None = None) -> ComponentStatus: ...

    def stop(self) -> None: ...

    def reject(self, err: ProtocolError, where: str) -> None: ...


def _numeric(d: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class StatusServer:
    """The background thread that serves one component's status endpoint."""

    def __init__(self, component: StatusSource, sock: zmq.Socket[Any], trust: Trust | None = None):
        self.component = component
        self.sock = sock
        #: who may ask for a stop (an operator key, or loopback / operator_hosts); None: anyone
        self.trust = trust
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"status-{component.name}", daemon=True)
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._warn = RateLimitedLog(component.log)

    def start(self) -> None:
        # the socket was bound by the caller; from here on only the thread uses it (the
        # thread start is the memory barrier zmq asks for when a socket changes threads)
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _rates(self) -> dict[str, float]:
        now = time.monotonic()
        current = _numeric(dict(self.component.counters))
        if not self._samples or now - self._samples[-1][0] >= RATE_WINDOW_S / 2:
            self._samples.append((now, current))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.pop(0)
        t0, old = self._samples[0]
        dt = now - t0
        if dt <= 0:
            return {}
        return {
            f"{k}_per_s": round((v - old.get(k, 0)) / dt, 1)
            for k, v in current.items()
            if k not in _TIMESTAMPS and v != old.get(k, 0)
        }

    def _serve(self) -> None:
        sock = self.sock
        try:
            while not self._stop.is_set():
                try:
                    if not sock.poll(100):
                        self._rates()  # keep a recent sample so rates cover the last second
                        continue
                    # frames, not bytes: they carry who sent them (Peer-Address, User-Id)
                    self._answer(sock.recv_multipart(copy=False))
                except zmq.ContextTerminated:
                    raise
                except Exception as e:  # the endpoint outlives anything a request does to it
                    self.component.counters[Count.STATUS_FAILURES] += 1
                    self._warn.warning("failure", "status endpoint: %s: %s (still serving)", type(e).__name__, e)
                    self._stop.wait(FAILURE_PAUSE_S)  # a fault that repeats at once must not spin
        except zmq.ContextTerminated:
            pass
        finally:
            sock.close(linger=0)

    def _snapshot(self) -> ComponentStatus:
        comp = self.component
        for _ in range(3):  # the main thread may resize a dict while we copy it
            try:
                return comp.current_status(self._rates())
            except RuntimeError:
                continue
        return ComponentStatus(name=comp.name, role=comp.role, state=Observed.BUSY)

    def _answer(self, parts: list[zmq.Frame]) -> None:
        comp = self.component
        if len(parts) < 3 or parts[1].bytes != b"":  # no REQ envelope: nobody to answer
            comp.reject(ProtocolError("status request without REQ envelope", kind="bad_framing"), "status")
            return
        peer = parts[0].bytes
        try:
            msg = decode(parts[2:], max_payload_bytes=MAX_REQUEST_BYTES)
            if not isinstance(msg.control, StatusRequest):
                raise ProtocolError(f"unexpected {msg.kind} on status", kind="bad_kind")
        except ProtocolError as e:
            comp.reject(e, "status")
            self.sock.send_multipart([peer, b"", *encode_control(ErrorReply(reason=str(e)))])
            return
        reply: Reply
        try:
            if msg.control.cmd == "stop":
                comp.reject(ProtocolError("stop on the read-only status endpoint", kind="refused"), "status")
                reason = "the status endpoint is read-only: use `framepipe stop` or `framepipe shutdown`"
                reply = ErrorReply(reason=reason)
            else:
                status = self._snapshot().to_reply(max_list=MAX_LIST)
                reply = StatusReply(ok=True, status=json.loads(json.dumps(status, default=str)))
            frames = encode_control(reply)
        except Exception as e:  # the asker learns it failed rather than waiting out its timeout
            comp.counters[Count.STATUS_FAILURES] += 1
            self._warn.warning("answer", "status answer failed: %s: %s", type(e).__name__, e)
            frames = encode_control(ErrorReply(reason=f"status failed: {type(e).__name__}"))
        self.sock.send_multipart([peer, b"", *frames])
