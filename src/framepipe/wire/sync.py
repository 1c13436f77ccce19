"""REQ/REP start and end synchronisation (the zguide "node coordination" pattern).

Stable components bind a ROUTER (REP-compatible, but able to answer later); clients use
REQ. A client says ``hello`` before the first message and ``bye`` after end of stream,
each with its name. Replies may be deferred: the sink answers the ventilator's hello only
once its results subscribers are there and a worker has been seen.

Requests and replies are the models of ``wire.messages`` (Hello/Welcome, Bye/Done, the
ventilator's EndOfStreamRequest/Done), decoded by protocol.py on both sides. A request the
server refuses — malformed, or not one it takes — is answered with an ErrorReply whose
``reason`` says why, so the client's log names the problem rather than a timeout.

Clients use the lazy-pirate pattern: poll with a timeout, and on silence close the REQ
socket, open a new one and ask again, until an overall deadline gives a SyncError.

Every reply carries the server's wall clock (``t_server_ns``), so each client measures its
round-trip time (``rtt_ns``) and the offset of the server's clock from its own
(``clock_offset_ns`` = server clock − client clock, NTP-style: the server read its clock
half a round trip after the request left). A deferred reply (the sink's welcome) makes the
round trip long, so its offset is only as good as rtt/2; ``rtt_ns`` says how good.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import zmq

from framepipe.core.errors import ProtocolError, SyncError
from framepipe.wire.messages import ErrorReply, Reply, control_message
from framepipe.wire.protocol import MAX_HEADER_BYTES, Message, decode, encode_control
from framepipe.wire.security import Peer

RETRY_S = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class SyncRequest:
    """One request taken by a :class:`SyncServer`: whom to answer, what it asks, who sent it."""

    #: the ROUTER's routing id of the requester: pass it to ``reply``/``refuse``
    identity: bytes
    message: Message
    #: what the transport says of the sender (address; key and role under CURVE), for Trust
    peer: Peer


class SyncServer:
    """The binding side: receives hello/bye/eos requests on a ROUTER socket."""

    def __init__(self, sock: zmq.Socket[Any], max_payload: int):
        self.sock = sock
        self.max_payload = max_payload

    def receive(self) -> SyncRequest:
        """Take one request: whom to answer, the decoded message (with its model), and
        who sent it.

        A malformed one is refused (an ErrorReply saying why) and raises ProtocolError,
        so the caller counts it. Otherwise the caller must ``reply`` (or ``refuse``).
        """
        # frames, not bytes: they carry who sent them (Peer-Address, User-Id)
        parts = self.sock.recv_multipart(copy=False)
        if len(parts) < 3 or parts[1].bytes != b"":
            raise ProtocolError("sync request without REQ envelope", kind="bad_framing")
        identity = parts[0].bytes
        try:
            return SyncRequest(identity, decode(parts[2:], max_payload_bytes=self.max_payload), Peer.of(parts[-1]))
        except ProtocolError as e:
            self.refuse(identity, str(e))
            raise

    def reply(self, peer: bytes, message: Reply | str = "welcome", **fields: Any) -> None:
        """Answer a request with a reply model (or a kind and its fields), stamped with
        this server's clock (``t_server_ns``) unless it carries one."""
        if isinstance(message, str):
            built = control_message(message, **fields)
            if not isinstance(built, Reply):
                raise ValueError(f"{message} is not a reply")
            message = built
        if message.t_server_ns is None:
            message = message.model_copy(update={"t_server_ns": time.time_ns()})
        self.sock.send_multipart([peer, b"", *encode_control(message)])

    def refuse(self, peer: bytes, reason: str) -> None:
        """Answer a request with an ErrorReply: the client learns why, in one line."""
        self.reply(peer, ErrorReply(reason=reason))


@dataclasses.dataclass(frozen=True, slots=True)
class Exchange:
    """One sync request answered: the reply and what its timing says about the server."""

    reply: Message
    #: request sent → reply received, on the client's clock
    rtt_ns: int
    #: server clock − client clock (NTP-style), when the reply carried ``t_server_ns``
    clock_offset_ns: int | None

    def header(self) -> dict[str, Any]:
        """The reply's header with ``rtt_ns`` and ``clock_offset_ns`` added (the dict form)."""
        out = {**self.reply.header, "rtt_ns": self.rtt_ns}
        if self.clock_offset_ns is not None:
            out["clock_offset_ns"] = self.clock_offset_ns
        return out


def exchange(
    ctx: zmq.Context[Any],
    url: str,
    kind: str,
    name: str,
    *,
    timeout_s: float,
    should_stop: Callable[[], bool] = lambda: False,
    curve: Callable[[zmq.Socket[Any]], None] | None = None,
    **fields: Any,
) -> Exchange:
    """Send one sync request and wait for its reply, retrying on silence.

    The reply is decoded by protocol.decode and must be a reply kind (an ErrorReply is
    returned, for the caller to read its reason). Raises SyncError after ``timeout_s``,
    when stopped, or for an invalid reply.
    """
    deadline = time.monotonic() + timeout_s
    payload = encode_control(kind, name=name, t_send_ns=time.time_ns(), **fields)
    while True:
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        # a reply is one header: a server sending more is cut off before it is buffered
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_HEADER_BYTES)
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
                    try:
                        reply = decode(sock.recv_multipart(), max_payload_bytes=0)
                    except ProtocolError as e:
                        raise SyncError(f"invalid answer to {kind} from {url}: {e}") from e
                    if not isinstance(reply.control, Reply):
                        raise SyncError(f"{reply.kind} is no answer to {kind} (from {url})")
                    t_server = reply.control.t_server_ns
                    offset = None if t_server is None else t_server - (t0 + t1) // 2
                    return Exchange(reply, t1 - t0, offset)
                # lazy pirate only for the first answer; a deferred reply (welcome later)
                # keeps the same socket once the server has shown it is there
                if now >= retry_at and kind != "hello":
                    break
        finally:
            sock.close(linger=0)
