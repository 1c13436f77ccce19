"""The connecting side of a broadcast stream: SUB socket, hello/bye, gap counting."""

from __future__ import annotations

from typing import Any

import zmq

from framepipe.core.errors import ProtocolError, SyncError
from framepipe.core.ledger import SequenceTracker
from framepipe.wire.messages import EndOfStream, ErrorReply, Welcome
from framepipe.wire.protocol import Message, decode, subscriber_topic
from framepipe.wire.sockets import SocketOwner
from framepipe.wire.sync import exchange


class Subscription:
    """Subscribes to one stream and validates what arrives.

    Counts sequence gaps (frames this subscriber did not get: PUB drops at its
    high-water mark by design), remembers the end-of-stream, says hello and bye.
    """

    def __init__(
        self,
        owner: SocketOwner,
        *,
        stream: str,
        pub_url: str,
        sync_url: str,
        hwm: int,
        sequence: SequenceTracker | None = None,
    ):
        """``sequence``: the tracker that counts this stream's gaps, when the owner keeps one
        already (the recorder's series reports them in its ledger); a new one otherwise."""
        self.owner = owner
        self.stream = stream
        self.pub_url = pub_url
        self.sync_url = sync_url
        self.sub = owner.socket(zmq.SUB, rcvhwm=hwm)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.SUBSCRIBE, subscriber_topic(owner.name))
        owner.connect(self.sub, pub_url)
        self.sequence = sequence if sequence is not None else SequenceTracker()
        #: the stream's end, once it came
        self.eos: EndOfStream | None = None
        #: the publisher's welcome header, with the sync's ``rtt_ns`` and ``clock_offset_ns``
        self.welcome: dict[str, Any] = {}

    def hello(self, timeout_s: float) -> Welcome:
        """Tell the publisher we are here; returns its welcome (stream metadata).

        Raises SyncError if it does not answer in time, or refuses (saying why).
        """
        assert self.owner.ctx is not None
        answer = exchange(
            self.owner.ctx,
            self.sync_url,
            "hello",
            self.owner.name,
            timeout_s=timeout_s,
            should_stop=lambda: self.owner.stopping,
        )
        if isinstance(answer.reply.control, ErrorReply):
            raise SyncError(f"{self.sync_url} refused our hello: {answer.reply.control.reason}")
        welcome = answer.reply.control
        if not isinstance(welcome, Welcome):
            raise SyncError(f"{self.sync_url} answered our hello with {answer.reply.kind}")
        self.welcome = answer.header()
        return welcome

    def bye(self, timeout_s: float, **counts: Any) -> None:
        """Tell the publisher we are done, with our counts (Bye's fields)."""
        assert self.owner.ctx is not None
        try:
            answer = exchange(self.owner.ctx, self.sync_url, "bye", self.owner.name, timeout_s=timeout_s, **counts)
        except Exception as e:  # the publisher may be gone already: say so, do not fail
            self.owner.log.warning("bye to %s not answered: %s", self.sync_url, e)
            return
        if isinstance(answer.reply.control, ErrorReply):
            self.owner.log.warning("bye to %s refused: %s", self.sync_url, answer.reply.control.reason)

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
        if isinstance(msg.control, EndOfStream):
            if self.eos is None:
                self.eos = msg.control
                self.sequence.finish(msg.control.seq_last)
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
