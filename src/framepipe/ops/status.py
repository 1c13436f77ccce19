"""``framepipe status``: ask every component of a deployment how it is, and show it.

The client half of the status endpoints that :mod:`framepipe.runtime.status` serves.
:func:`query_deployment` asks every configured endpoint at once and waits at most
``timeout_s`` in total; a component that does not answer is reported as down. Each answer
is a :class:`~framepipe.runtime.status.ComponentStatus`, validated as it arrives (a
malformed one is a down component, not a crash). What the query returns is each one's
reply layout (:meth:`~framepipe.runtime.status.ComponentStatus.to_reply`, what
``framepipe status --json`` prints); renderers (the table here, the dashboard) read it
back into the model with :func:`as_statuses`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import zmq

from framepipe.config import Config
from framepipe.core.counters import Count
from framepipe.core.errors import ConfigError, ProtocolError
from framepipe.runtime.status import MAX_REQUEST_BYTES, ComponentStatus, Observed, Role, State
from framepipe.wire.messages import ErrorReply, StatusReply, StatusRequest
from framepipe.wire.protocol import MAX_HEADER_BYTES, decode, encode_control
from framepipe.wire.security import make_context

#: the count the table shows, the first of these a component has
TABLE_COUNTS = (Count.PUBLISHED, Count.ACCEPTED, Count.RECEIVED, Count.WRITTEN, Count.PROCESSED)
#: the rate the table shows, the first of these a component has
TABLE_RATES = (Count.PUBLISHED, Count.ACKNOWLEDGED, Count.RECEIVED, Count.WRITTEN)


@dataclass(frozen=True)
class StatusEndpoint:
    """One component's status endpoint as the config describes it."""

    name: str
    role: str
    url: str


def endpoints(config: Config) -> list[StatusEndpoint]:
    """Every status endpoint of a deployment, in pipeline order."""
    out: list[StatusEndpoint] = []
    for role in (Role.PUBLISHER, Role.VENTILATOR, Role.SINK):
        section = getattr(config, role)
        if section.status_port is not None:
            out.append(StatusEndpoint(role, role, section.connect_url(section.status_port)))
    for rec in config.recorders:
        if rec.status_port is not None:
            out.append(StatusEndpoint(rec.name, Role.RECORDER, rec.connect_url(rec.status_port)))
    return out


def _down(ep: StatusEndpoint, reason: str) -> ComponentStatus:
    return ComponentStatus(name=ep.name, role=ep.role, url=ep.url, state=Observed.DOWN, error=reason)


def _answer(ep: StatusEndpoint, sock: zmq.Socket[Any]) -> ComponentStatus:
    """One endpoint's answer as a status; a refused or malformed one says down, and why."""
    try:
        msg = decode(sock.recv_multipart(), max_payload_bytes=MAX_REQUEST_BYTES)
    except ProtocolError as e:
        return _down(ep, f"bad answer: {e}")
    reply = msg.control
    if isinstance(reply, ErrorReply):
        return _down(ep, reply.reason)
    if not isinstance(reply, StatusReply) or not reply.ok:
        return _down(ep, f"unexpected {msg.kind} answer")
    status = dict(reply.status or {"name": ep.name, "role": ep.role, "state": State.STOPPING})
    status.setdefault("state", State.RUNNING)
    try:
        return ComponentStatus.model_validate({**status, "url": ep.url})
    except pydantic.ValidationError as e:
        return _down(ep, f"bad answer: {e.error_count()} invalid field(s), first {e.errors()[0]['loc']}")


def _workers(sink: ComponentStatus) -> list[ComponentStatus]:
    """The workers a sink reports (they have no endpoint of their own)."""
    out = [
        ComponentStatus(name=worker, role=Role.WORKER, state=Observed.SEEN, last_heard_s=silent)
        for worker, silent in (sink.workers or {}).items()
    ]
    lost = sink.counters.get(Count.WORKERS_LOST)
    for worker in lost if isinstance(lost, list) else []:
        out.append(ComponentStatus(name=str(worker), role=Role.WORKER, state=Observed.LOST))
    return out


def query_deployment(
    config: Config,
    *,
    timeout_s: float = 2.0,
    command: Literal["status", "stop"] = "status",
    ctx: zmq.Context[Any] | None = None,
    only: str | None = None,
) -> list[dict[str, Any]]:
    """Ask every status endpoint at once; one reply per component, ``down`` if silent.

    The whole call takes at most about ``timeout_s``, however many components are down.
    Workers come from the sink's answer (role ``worker``, state ``seen``/``lost``).
    ``only``: ask that one component (a probe of it, e.g. Kubernetes'), no workers.
    """
    eps = endpoints(config)
    if only is not None:
        eps = [ep for ep in eps if ep.name == only]
        if not eps:
            known = ", ".join(ep.name for ep in endpoints(config)) or "none"
            raise ConfigError(f"--only: no status endpoint named {only!r} (configured: {known})")
    own = ctx is None
    context: zmq.Context[Any] = make_context(config.security) if ctx is None else ctx
    socks: dict[zmq.Socket[Any], StatusEndpoint] = {}
    results: dict[str, ComponentStatus] = {}
    try:
        for ep in eps:
            sock = context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES)  # an answer is one header
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
                results[ep.name] = _answer(ep, sock)
    finally:
        for sock in socks:
            sock.close(linger=0)
        if own:
            context.destroy(linger=0)  # also closes a socket whose connect failed
    out = [results.get(ep.name) or _down(ep, f"no answer within {timeout_s:g} s") for ep in eps]
    for entry in list(out) if only is None else ():
        if entry.role == Role.SINK and entry.state != Observed.DOWN:
            out.extend(_workers(entry))
    return [s.to_reply() for s in out]


def as_statuses(replies: Iterable[Mapping[str, Any]]) -> list[ComponentStatus]:
    """Replies (the layout :func:`query_deployment` returns) as status models."""
    return [ComponentStatus.model_validate(r) for r in replies]


def _count(status: ComponentStatus) -> str:
    for key in TABLE_COUNTS:
        if key in status.counters:
            return f"{key} {status.counters[key]}"
    return ""


def _rate(status: ComponentStatus) -> str:
    for key in TABLE_RATES:
        if f"{key}_per_s" in status.rates:
            return f"{status.rates[f'{key}_per_s']:.1f}/s"
    return ""


def _notes(status: ComponentStatus) -> str:
    if status.state == Observed.DOWN:
        return status.error or ""
    notes = []
    queue = status.queue.model_dump(exclude_unset=True) if status.queue is not None else {}
    if queue:
        notes.append(" ".join(f"{k}={v}" for k, v in queue.items()))
    if status.peers is not None and status.peers.subscribers:
        notes.append("subscribers " + ",".join(status.peers.subscribers))
    if status.workers:
        notes.append(f"{len(status.workers)} worker(s)")
    if status.last_heard_s is not None:
        notes.append(f"heard {status.last_heard_s} s ago")
    rejected = status.counters.get(Count.REJECTED)
    if rejected:
        notes.append(f"rejected {rejected}")
    transport = status.counters.get(Count.TRANSPORT)
    if isinstance(transport, str) and transport != "tcp":
        notes.append(transport)  # a subscriber or worker reading the publisher's ring
    elif isinstance(transport, dict):
        ring = [name for name, path in transport.items() if path != "tcp"]
        if ring:
            notes.append("shared memory: " + ",".join(ring))  # the publisher: who reads its ring
    restarts = status.counters.get(Count.RESTARTS)
    if restarts:
        notes.append(f"restarted {restarts}×")
    return "; ".join(notes)


def render_table(replies: Iterable[Mapping[str, Any]]) -> str:
    """The plain-text table ``framepipe status`` prints, from what :func:`query_deployment` returns."""
    header = f"{'component':<28}{'role':<11}{'state':<10}{'host':<16}{'uptime':>8}  {'count':<18}{'rate':>10}  notes"
    lines = [header]
    for s in as_statuses(replies):
        uptime = f"{s.uptime_s:.0f}s" if s.uptime_s is not None else "-"
        lines.append(
            f"{s.name:<28}{s.role:<11}{s.state or '?'!s:<10}{s.host:<16}{uptime:>8}  "
            f"{_count(s):<18}{_rate(s):>10}  {_notes(s)}"
        )
    return "\n".join(lines)


def watch(
    config: Config, *, interval_s: float, timeout_s: float, count: int | None = None, only: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Query repeatedly; yields each round (the CLI prints, a dashboard renders)."""
    ctx = make_context(config.security)
    try:
        n = 0
        while count is None or n < count:
            started = time.monotonic()
            yield query_deployment(config, timeout_s=timeout_s, ctx=ctx, only=only)
            n += 1
            if count is None or n < count:
                # pacing between refreshes for a human reader, not synchronisation
                time.sleep(max(0.0, interval_s - (time.monotonic() - started)))  # sleep-ok
    finally:
        ctx.destroy(linger=0)
