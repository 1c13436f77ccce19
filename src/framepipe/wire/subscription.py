"""The connecting side of a broadcast stream: SUB socket, hello/bye, gap counting."""

from __future__ import annotations

from typing import Any

import zmq

from framepipe.core.errors import ProtocolError
from framepipe.core.ledger import SequenceTracker
from framepipe.wire.protocol import Message, decode, subscriber_topic
from framepipe.wire.sockets import SocketOwner
from framepipe.wire.sync import request


class Subscription:
    """Subscribes to one stream and validates what arrives.

    Counts sequence gaps (frames this subscriber did not get: PUB drops at its
    high-water mark by design), remembers the end-of-stream, says hello and bye.
    """

    def __init__(self, owner: SocketOwner, *, stream: str, pub_url: str, sync_url: str, hwm: int):
        self.owner = owner
        self.stream = stream
        self.pub_url = pub_url
        self.sync_url = sync_url
        self.sub = owner.socket(zmq.SUB, rcvhwm=hwm)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.SUBSCRIBE, subscriber_topic(owner.name))
        owner.connect(self.sub, pub_url)
        self.sequence = SequenceTracker()
        self.eos: dict[str, Any] | None = None
        self.welcome: dict[str, Any] = {}

    def hello(self, timeout_s: float) -> dict[str, Any]:
        """Tell the publisher we are here; returns its welcome (stream metadata)."""
        assert self.owner.ctx is not None
        self.welcome = request(
            self.owner.ctx,
            self.sync_url,
            "hello",
            self.owner.name,
            timeout_s=timeout_s,
            should_stop=lambda: self.owner.stopping,
        )
        return self.welcome

    def bye(self, timeout_s: float, **counts: Any) -> None:
        assert self.owner.ctx is not None
        try:
            request(self.owner.ctx, self.sync_url, "bye", self.owner.name, timeout_s=timeout_s, **counts)
        except Exception as e:  # the publisher may be gone already: say so, do not fail
            self.owner.log.warning("bye to %s not answered: %s", self.sync_url, e)

    def receive(self) -> Message | None:
        """One message if one is waiting: data or eos; None if none or it was malformed."""
        try:
            parts = self.sub.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        try:
            msg = decode(parts, max_payload_bytes=self.owner.max_payload)
        except ProtocolError as e:
            self.owner.reject(e, self.stream)
            return None
        if msg.kind == "eos":
            if self.eos is None:
                self.eos = msg.header
                seq_last = msg.header.get("seq_last")
                self.sequence.finish(seq_last if isinstance(seq_last, int) else None)
            return msg
        if msg.kind not in ("frame", "result"):
            self.owner.reject(ProtocolError(f"unexpected {msg.kind} on {self.stream}", kind="bad_kind"), self.stream)
            return None
        if self.eos is not None:
            return None  # a straggler after end-of-stream (stream restarted): ignore
        skipped = self.sequence.see(msg.seq)
        if skipped:
            self.owner.warn.warning(
                f"gap:{self.stream}", "%s: %d message(s) missed before seq %d", self.stream, skipped, msg.seq
            )
        return msg
