"""REQ/REP start and end synchronisation (the zguide "node coordination" pattern).

Stable components bind a ROUTER (REP-compatible, but able to answer later); clients use
REQ. A client says ``hello`` before the first message and ``bye`` after end of stream,
each with its name. Replies may be deferred: the sink answers the ventilator's hello only
once its results subscribers are there and a worker has been seen.

Clients use the lazy-pirate pattern: poll with a timeout, and on silence close the REQ
socket, open a new one and ask again, until an overall deadline gives a SyncError.

Every reply carries the server's wall clock (``t_server_ns``), so each client measures its
round-trip time (``rtt_ns``) and the offset of the server's clock from its own
(``clock_offset_ns`` = server clock − client clock, NTP-style: the server read its clock
half a round trip after the request left). A deferred reply (the sink's welcome) makes the
round trip long, so its offset is only as good as rtt/2; ``rtt_ns`` says how good.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import zmq

from framepipe.core.errors import ProtocolError, SyncError
from framepipe.wire.protocol import decode, encode_control

RETRY_S = 1.0


class SyncServer:
    """The binding side: receives hello/bye/done requests on a ROUTER socket."""

    def __init__(self, sock: zmq.Socket[Any], max_payload: int):
        self.sock = sock
        self.max_payload = max_payload

    def receive(self) -> tuple[bytes, str, dict[str, Any]] | None:
        """Take one request: (peer identity, kind, header), or None for a malformed one.

        Raises ProtocolError so the caller counts it. The caller must ``reply``.
        """
        parts = self.sock.recv_multipart()
        if len(parts) < 3 or parts[1] != b"":
            raise ProtocolError("sync request without REQ envelope", kind="bad_framing")
        peer = parts[0]
        msg = decode(parts[2:], max_payload_bytes=self.max_payload)
        name = msg.header.get("name")
        if not isinstance(name, str) or not name:
            self.reply(peer, "status", ok=False, error="missing name")
            raise ProtocolError("sync request without a name", kind="missing_field")
        return peer, msg.kind, msg.header

    def reply(self, peer: bytes, kind: str = "welcome", **fields: Any) -> None:
        fields.setdefault("t_server_ns", time.time_ns())
        self.sock.send_multipart([peer, b"", *encode_control(kind, **fields)])


def request(
    ctx: zmq.Context[Any],
    url: str,
    kind: str,
    name: str,
    *,
    timeout_s: float,
    should_stop: Callable[[], bool] = lambda: False,
    curve: Callable[[zmq.Socket[Any]], None] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Send one sync request and wait for its reply, retrying on silence.

    Returns the reply header; raises SyncError after ``timeout_s`` or when stopped.
    """
    deadline = time.monotonic() + timeout_s
    payload = encode_control(kind, name=name, t_send_ns=time.time_ns(), **fields)
    while True:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if curve is not None:
                curve(sock)
            sock.connect(url)  # inside try: a bad key must not leave a socket to hang ctx.term()
            t0 = time.time_ns()
            sock.send_multipart(payload)
            retry_at = time.monotonic() + RETRY_S
            while True:
                if should_stop():
                    raise SyncError(f"stopped while waiting for {url}")
                now = time.monotonic()
                if now >= deadline:
                    raise SyncError(f"no answer to {kind} from {url} within {timeout_s:g} s")
                if sock.poll(int(min(100, (deadline - now) * 1000) + 1)):
                    t1 = time.time_ns()
                    reply = json.loads(sock.recv())
                    reply["rtt_ns"] = t1 - t0
                    t_server = reply.get("t_server_ns")
                    if isinstance(t_server, int) and not isinstance(t_server, bool):
                        reply["clock_offset_ns"] = t_server - (t0 + t1) // 2
                    return dict(reply)
                # lazy pirate only for the first answer; a deferred reply (welcome later)
                # keeps the same socket once the server has shown it is there
                if now >= retry_at and kind != "hello":
                    break
        finally:
            sock.close(linger=0)
