"""Status of a running deployment: each component's control endpoint, and ``framepipe status``.

Server side: :class:`StatusServer` is a ROUTER socket served by a background thread that a
:class:`~framepipe.component.Component` starts when it is ready (on ``status_port`` of its
config section). The socket is bound by the component and then used only by that thread;
the thread reads ``component.summary()`` (counters are plain ints in dicts: a copy is
consistent enough for a status line) and never touches the component's own sockets. It
answers two requests, both ``StatusRequest`` messages (see wire/messages.py):

- ``{"cmd": "status"}`` → ``{"ok": true, "status": {role, host, uptime_s, counters, rates,
  queue, peers, workers...}}``
- ``{"cmd": "stop"}``   → ``{"ok": true}`` and the component's ``stop()`` (as SIGTERM would).

Anything else is refused with an ``ErrorReply`` whose ``reason`` says why.

Workers have no endpoint: the sink hears their heartbeats and reports them.

Client side: :func:`query_deployment` asks every configured endpoint at once and waits at
most ``timeout_s`` in total; a component that does not answer is reported as down. It
returns plain dicts so any renderer (the table here, a dashboard) can show them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import zmq

from framepipe.config import Config
from framepipe.core.errors import ProtocolError
from framepipe.wire.messages import ErrorReply, Reply, StatusReply, StatusRequest
from framepipe.wire.protocol import decode, encode_control

if TYPE_CHECKING:
    from framepipe.runtime.component import Component

#: how often the server samples counters to compute rates
RATE_WINDOW_S = 1.0
#: sink summaries list missing ids; a status answer keeps it short
MAX_LIST = 20
MAX_REQUEST_BYTES = 4096


# ---------------------------------------------------------------------------- server


def _numeric(d: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def component_status(component: Component, rates: dict[str, float]) -> dict[str, Any]:
    """One component's status dict, from its summary plus what its parts expose."""
    summary = component.summary()
    out: dict[str, Any] = {
        "name": summary.pop("component", component.name),
        "role": summary.pop("role", component.role),
        "host": summary.pop("host", ""),
        "pid": summary.pop("pid", None),
        "uptime_s": summary.pop("uptime_s", None),
        "state": "stopping" if component.stopping else "running",
        "bound": list(component.bound),
    }
    for key, value in list(summary.items()):
        if isinstance(value, list) and len(value) > MAX_LIST:
            summary[key] = [*value[:MAX_LIST], f"... {len(value) - MAX_LIST} more"]
    out["counters"] = summary
    out["rates"] = rates
    # the parts a component may have, found by duck typing so that no component needs a
    # status method of its own: a broadcast stream (publisher, sink), a worker table
    # (sink: name → last heard; ventilator: names), a ventilator's in-flight window
    stream = getattr(component, "stream", None)
    if stream is not None and hasattr(stream, "hellos"):
        out["peers"] = {
            "subscribers": sorted(stream.hellos),
            "finished": sorted(stream.byes),
            "subscriptions": stream.subscriptions,
        }
    queue: dict[str, int] = {}
    if isinstance(getattr(component, "in_flight", None), dict):
        queue["in_flight"] = len(component.in_flight)  # type: ignore[attr-defined]
    if hasattr(getattr(component, "queue", None), "__len__"):
        queue["waiting"] = len(component.queue)  # type: ignore[attr-defined]
    out["queue"] = queue
    # the start sync of a subscriber (recorder: sub, ventilator: source): rtt and clock offset
    for attr in ("sub", "source"):
        welcome = getattr(getattr(component, attr, None), "welcome", None)
        if isinstance(welcome, dict) and "rtt_ns" in welcome:
            out["sync"] = {k: welcome[k] for k in ("rtt_ns", "clock_offset_ns") if k in welcome}
    workers = getattr(component, "workers", None)
    if isinstance(workers, dict):
        now = time.monotonic()
        out["workers"] = {name: round(now - seen, 1) for name, seen in dict(workers).items()}
    elif isinstance(workers, list):
        out["workers"] = {name: None for name in workers}
    return out


class StatusServer:
    """The background thread that serves one component's status endpoint."""

    def __init__(self, component: Component, sock: zmq.Socket[Any]):
        self.component = component
        self.sock = sock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"status-{component.name}", daemon=True)
        self._samples: list[tuple[float, dict[str, float]]] = []

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
            if k not in ("first_ns", "last_ns") and v != old.get(k, 0)
        }

    def _serve(self) -> None:
        sock = self.sock
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    self._rates()  # keep a recent sample so rates cover the last second
                    continue
                parts = sock.recv_multipart()
                self._answer(parts)
        except zmq.ContextTerminated:
            pass
        finally:
            sock.close(linger=0)

    def _answer(self, parts: list[bytes]) -> None:
        comp = self.component
        if len(parts) < 3 or parts[1] != b"":
            comp.counters["rejected"] += 1
            return
        peer = parts[0]
        try:
            msg = decode(parts[2:], max_payload_bytes=MAX_REQUEST_BYTES)
            if not isinstance(msg.control, StatusRequest):
                raise ProtocolError(f"unexpected {msg.kind} on status", kind="bad_kind")
        except ProtocolError as e:
            comp.reject(e, "status")
            self.sock.send_multipart([peer, b"", *encode_control(ErrorReply(reason=str(e)))])
            return
        reply: Reply
        if msg.control.cmd == "stop":
            comp.log.info("stop requested on the status endpoint")
            comp.stop()
            reply = StatusReply(ok=True, stopping=True)
        else:
            for _ in range(3):  # the main thread may resize a dict while we copy it
                try:
                    status = component_status(comp, self._rates())
                    break
                except RuntimeError:
                    continue
            else:
                status = {"name": comp.name, "role": comp.role, "state": "busy"}
            reply = StatusReply(ok=True, status=json.loads(json.dumps(status, default=str)))
        self.sock.send_multipart([peer, b"", *encode_control(reply)])


# ---------------------------------------------------------------------------- client


@dataclass(frozen=True)
class StatusEndpoint:
    """One component's status endpoint as the config describes it."""

    name: str
    role: str
    url: str


def endpoints(config: Config) -> list[StatusEndpoint]:
    """Every status endpoint of a deployment, in pipeline order."""
    out: list[StatusEndpoint] = []
    for role in ("publisher", "ventilator", "sink"):
        section = getattr(config, role)
        if section.status_port is not None:
            out.append(StatusEndpoint(role, role, section.connect_url(section.status_port)))
    for rec in config.recorders:
        if rec.status_port is not None:
            out.append(StatusEndpoint(rec.name, "recorder", rec.connect_url(rec.status_port)))
    return out


def _down(ep: StatusEndpoint, reason: str) -> dict[str, Any]:
    return {"name": ep.name, "role": ep.role, "url": ep.url, "state": "down", "error": reason}


def query_deployment(
    config: Config,
    *,
    timeout_s: float = 2.0,
    command: Literal["status", "stop"] = "status",
    ctx: zmq.Context[Any] | None = None,
) -> list[dict[str, Any]]:
    """Ask every status endpoint at once; one dict per component, ``state="down"`` if silent.

    The whole call takes at most about ``timeout_s``, however many components are down.
    Workers come from the sink's answer (role ``worker``, state ``seen``/``lost``).
    """
    from framepipe.wire.security import make_context

    eps = endpoints(config)
    own = ctx is None
    context: zmq.Context[Any] = make_context(config.security) if ctx is None else ctx
    socks: dict[zmq.Socket[Any], StatusEndpoint] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for ep in eps:
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(ep.url)
            sock.send_multipart(encode_control(StatusRequest(cmd=command)))
            socks[sock] = ep
        deadline = time.monotonic() + timeout_s
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        while len(results) < len(socks):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for sock, _ in poller.poll(int(left * 1000) + 1):
                ep = socks[sock]
                poller.unregister(sock)
                try:
                    msg = decode(sock.recv_multipart(), max_payload_bytes=MAX_REQUEST_BYTES)
                except ProtocolError as e:
                    results[ep.name] = _down(ep, f"bad answer: {e}")
                    continue
                reply = msg.control
                if isinstance(reply, ErrorReply):
                    results[ep.name] = _down(ep, reply.reason)
                    continue
                if not isinstance(reply, StatusReply) or not reply.ok:
                    refused = reply.error if isinstance(reply, StatusReply) else f"unexpected {msg.kind}"
                    results[ep.name] = _down(ep, refused or "refused")
                    continue
                status = dict(reply.status or {"name": ep.name, "role": ep.role, "state": "stopping"})
                status.setdefault("state", "running")
                status["url"] = ep.url
                results[ep.name] = status
    finally:
        for sock in socks:
            sock.close(linger=0)
        if own:
            context.destroy(linger=0)  # also closes a socket whose connect failed
    out = [results.get(ep.name) or _down(ep, f"no answer within {timeout_s:g} s") for ep in eps]
    for entry in list(out):
        if entry.get("role") == "sink" and entry.get("state") != "down":
            for worker, silent in (entry.get("workers") or {}).items():
                out.append({"name": worker, "role": "worker", "state": "seen", "last_heard_s": silent})
            for worker in entry.get("counters", {}).get("workers_lost", []) or []:
                out.append({"name": worker, "role": "worker", "state": "lost"})
    return out


def _count(status: dict[str, Any]) -> str:
    counters = status.get("counters") or {}
    for key in ("published", "accepted", "received", "written", "processed"):
        if key in counters:
            return f"{key} {counters[key]}"
    return ""


def _rate(status: dict[str, Any]) -> str:
    rates = status.get("rates") or {}
    for key in ("published", "acknowledged", "received", "written"):
        if f"{key}_per_s" in rates:
            return f"{rates[f'{key}_per_s']:.1f}/s"
    return ""


def _notes(status: dict[str, Any]) -> str:
    if status.get("state") == "down":
        return str(status.get("error", ""))
    notes = []
    queue = status.get("queue") or {}
    if queue:
        notes.append(" ".join(f"{k}={v}" for k, v in queue.items()))
    peers = status.get("peers") or {}
    if peers.get("subscribers"):
        notes.append("subscribers " + ",".join(peers["subscribers"]))
    workers = status.get("workers")
    if workers:
        notes.append(f"{len(workers)} worker(s)")
    if status.get("last_heard_s") is not None:
        notes.append(f"heard {status['last_heard_s']} s ago")
    rejected = (status.get("counters") or {}).get("rejected")
    if rejected:
        notes.append(f"rejected {rejected}")
    return "; ".join(notes)


def render_table(statuses: list[dict[str, Any]]) -> str:
    """The plain-text table ``framepipe status`` prints."""
    header = f"{'component':<28}{'role':<11}{'state':<10}{'host':<16}{'uptime':>8}  {'count':<18}{'rate':>10}  notes"
    lines = [header]
    for s in statuses:
        uptime = s.get("uptime_s")
        lines.append(
            f"{s.get('name', '?')!s:<28}{s.get('role', '?')!s:<11}{s.get('state', '?')!s:<10}"
            f"{s.get('host', '')!s:<16}{(f'{uptime:.0f}s' if isinstance(uptime, (int, float)) else '-'):>8}  "
            f"{_count(s):<18}{_rate(s):>10}  {_notes(s)}"
        )
    return "\n".join(lines)


def watch(
    config: Config, *, interval_s: float, timeout_s: float, count: int | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Query repeatedly; yields each round (the CLI prints, a dashboard renders)."""
    from framepipe.wire.security import make_context

    ctx = make_context(config.security)
    try:
        n = 0
        while count is None or n < count:
            started = time.monotonic()
            yield query_deployment(config, timeout_s=timeout_s, ctx=ctx)
            n += 1
            if count is None or n < count:
                # pacing between refreshes for a human reader, not synchronisation
                time.sleep(max(0.0, interval_s - (time.monotonic() - started)))  # sleep-ok
    finally:
        ctx.destroy(linger=0)
