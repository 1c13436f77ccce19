"""The operator's side of the acquisition control endpoint: ``framepipe acquire``, ``stop``,
``snap``, ``shutdown``, and the deployment state in ``status``.

Every command asks the publisher's control endpoint (``publisher.control_port``), which owns
the camera and the acquisitions (see ``framepipe.publisher``). One request, one reply; a
refused request is a :class:`ControlRefused` with the publisher's one-line reason, and an
unanswered one a :class:`ControlError` naming the address: nothing waits forever.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from framepipe.config import Config
from framepipe.core.errors import FramepipeError, ProtocolError
from framepipe.wire.messages import AcquisitionState, ErrorReply
from framepipe.wire.protocol import decode, encode_control
from framepipe.wire.security import make_context

#: how long a command waits for the publisher's answer (``wait`` waits per round)
ANSWER_S = 5.0
#: between two progress lines of ``acquire`` (and state polls)
PROGRESS_S = 0.5
#: handshake events that mean the control endpoint will never answer this client
HANDSHAKE_REFUSED = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


class ControlError(FramepipeError):
    """No answer from the control endpoint (exit 1)."""

    exit_code = 1


class ControlRefused(FramepipeError):
    """The publisher refused the request; the message is its reason (exit 1)."""

    exit_code = 1


@dataclasses.dataclass
class Control:
    """A client of one deployment's control endpoint."""

    config: Config
    name: str = "operator"
    timeout_s: float = ANSWER_S
    #: a long-lived caller's context (the web server's), kept open; None: one per request
    context: zmq.Context[Any] | None = None

    @property
    def url(self) -> str:
        pub = self.config.publisher
        return pub.connect_url(pub.control_port)

    def _ask(self, kind: str, *, timeout_s: float | None = None, data: bool = False, **fields: Any) -> Any:
        """Send one request, return the decoded reply (a Message); raise on refusal/silence."""
        ctx = make_context(self.config.security) if self.context is None else self.context
        sock = None
        try:
            sock = ctx.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            # a handshake the endpoint refuses never answers: the monitor says so at once
            monitor = sock.get_monitor_socket(HANDSHAKE_REFUSED)
            sock.connect(self.url)
            sock.send_multipart(encode_control(kind, name=self.name, t_send_ns=time.time_ns(), **fields))
            self._await_answer(sock, monitor, self.timeout_s if timeout_s is None else timeout_s)
            parts = sock.recv_multipart(copy=False)
        finally:
            if self.context is None:
                ctx.destroy(linger=0)
            elif sock is not None:
                sock.close(linger=0)
        limit = int(self.config.limits.max_message_mb * 1e6) if data else 0
        try:
            reply = decode(parts, max_payload_bytes=limit)
        except ProtocolError as e:
            raise ControlError(f"invalid answer from {self.url}: {e}") from e
        if isinstance(reply.control, ErrorReply):
            raise ControlRefused(reply.control.reason)
        return reply

    def _await_answer(self, sock: zmq.Socket[Any], monitor: zmq.Socket[Any], wait_s: float) -> None:
        """Until the reply is there: ControlRefused as soon as the handshake is refused (a key
        the endpoint does not admit, no keys where CURVE is on), ControlError after ``wait_s``."""
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            ready = dict(poller.poll(max(1, int(left * 1000))))
            if sock in ready:
                return
            if monitor in ready:
                event = recv_monitor_message(monitor)["event"]
                if event & HANDSHAKE_REFUSED:
                    raise ControlRefused(self._handshake_refused(event))
        raise ControlError(f"no answer from the publisher's control endpoint {self.url} within {wait_s:g} s")

    def _handshake_refused(self, event: int) -> str:
        security = self.config.security
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            key = security.client_secret_key or f"{security.key_dir}/operator.key_secret"
            return (
                f"{self.url} refused this client's key ({key}): the control endpoint admits operator keys only "
                "(its log names the key and its role)"
            )
        if not security.enabled:
            return f"{self.url} refused the handshake: CURVE is on there and this config has no keys (security.key_dir)"
        return f"{self.url} refused the handshake (a protocol mismatch: not the same framepipe security?)"

    def state(self) -> AcquisitionState:
        return self._state(self._ask("command", action="state"))

    def acquire(
        self, frames: int, name: str | None = None, camera: dict[str, Any] | None = None, *, timeout_s: float = 30.0
    ) -> int:
        """Start an acquisition; returns its id (``timeout_s`` more for the camera to open)."""
        fields: dict[str, Any] = {"frames": frames}
        if name:
            fields["acquisition_name"] = name
        if camera:
            fields["camera"] = camera
        # the publisher opens the camera with these settings before answering
        state = self._state(self._ask("acquire", timeout_s=self.timeout_s + timeout_s, **fields))
        assert state.acquisition is not None
        return int(state.acquisition["id"])

    def command(self, action: str, **fields: Any) -> AcquisitionState:
        return self._state(self._ask("command", action=action, **fields))

    def wait(self, acquisition: int, timeout_s: float) -> dict[str, Any]:
        """The acquisition's summary once it is accounted for (raises after ``timeout_s``)."""
        reply = self._state(self._ask("command", action="wait", acquisition=acquisition, timeout_s=timeout_s))
        assert reply.summary is not None
        return reply.summary

    def snap(self) -> tuple[np.ndarray, dict[str, Any]]:
        reply = self._ask("command", action="snap", data=True, timeout_s=self.timeout_s + 30)
        if reply.array is None:
            raise ControlError(f"snap: {self.url} answered {reply.kind}, not a frame")
        return np.array(reply.array), reply.header

    @staticmethod
    def _state(reply: Any) -> AcquisitionState:
        if not isinstance(reply.control, AcquisitionState):
            raise ControlError(f"unexpected answer {reply.kind}")
        return reply.control


# ---------------------------------------------------------------------- commands
def acquire(config: Config, frames: int, name: str | None, camera: dict[str, Any], *, wait: bool) -> int:
    """``framepipe acquire``: start, show progress, print the summary; 0 only if complete."""
    control = Control(config)
    acq_id = control.acquire(frames, name, camera)
    if not wait:
        print(acq_id)
        return 0
    print(f"acquisition {acq_id} started", file=sys.stderr)
    last = ""
    while True:
        state = control.state()
        current = state.acquisition
        if current is None or current.get("id") != acq_id or state.state != "acquiring":
            break
        line = f"acquisition {acq_id}: {current['published']}/{current['frames'] or '∞'} frames"
        if line != last:
            print(line, file=sys.stderr, flush=True)
            last = line
        time.sleep(PROGRESS_S)  # sleep-ok: the pace of progress lines, not synchronisation
    summary = control.wait(acq_id, timeout_s=config.run.finish_timeout_s + 30)
    print(render_summary(summary))
    return 0 if summary["complete"] else 1


def deployment_line(config: Config, timeout_s: float) -> str:
    """One line for ``framepipe status``: the deployment's state, its acquisition under way
    and the last one (from the publisher's control endpoint)."""
    try:
        state = Control(config, timeout_s=timeout_s).state()
    except (ControlError, ControlRefused) as e:
        return f"deployment: unknown ({e})"
    parts = [f"deployment: {state.state}"]
    acq = state.acquisition
    if acq is not None:
        parts.append(f"acquisition {acq['id']} '{acq['name']}' {acq['published']}/{acq['frames'] or '∞'} frames")
    if state.history:
        last = state.history[-1]
        mark = "complete" if last.get("complete") else "NOT complete"
        parts.append(f"last: {last['id']} '{last['name']}' {last['published']} frames, {last['reason']}, {mark}")
    return " · ".join(parts)


def render_summary(summary: dict[str, Any]) -> str:
    """An acquisition's summary as the operator reads it: one row per component."""
    lines = [
        f"acquisition {summary['id']} '{summary['name']}': {summary['reason']}, "
        f"{summary['published']} frames published in {summary['duration_s']:.1f} s"
        + (f", camera lost {summary['camera_lost']}" if summary.get("camera_lost") else ""),
        f"  {'component':<20}{'frames':>8}{'missing':>9}  file",
    ]

    def row(name: str, report: dict[str, Any]) -> None:
        count = report.get("written", report.get("received", "-"))
        missing = report.get("missing", "-")
        complete = report.get("complete")
        mark = "" if complete is None else ("complete" if complete else "NOT complete")
        path = report.get("path") or ""
        lines.append(f"  {name:<20}{count!s:>8}{missing!s:>9}  {path} {mark}".rstrip())

    for name, report in summary["reports"].items():
        row(name, report)
        for sub, sub_report in (report.get("subscribers") or {}).items():
            row(sub, sub_report)
    for problem in summary["problems"]:
        lines.append(f"  problem: {problem}")
    lines.append("  every frame accounted for" if summary["complete"] else "  NOT every frame accounted for")
    return "\n".join(lines)


def snap(config: Config, png: str | None, npy: str | None) -> int:
    """``framepipe snap``: the newest frame (or one grabbed now) to a PNG and/or .npy file."""
    array, header = Control(config).snap()
    if npy:
        np.save(npy, array)
        print(npy)
    if png:
        from framepipe.subscribers.viewer.images import encode_png, frame_image

        Path(png).write_bytes(encode_png(frame_image(array)))
        print(png)
    print(f"frame {header['frame_id']}: {list(array.shape)} {array.dtype}", file=sys.stderr)
    return 0
