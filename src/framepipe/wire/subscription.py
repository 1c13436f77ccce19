"""The connecting side of a broadcast stream: SUB socket, hello/bye, gap counting."""

from __future__ import annotations

import time
from typing import Any

import zmq

from framepipe.core.errors import ProtocolError, SyncError
from framepipe.core.ledger import SequenceTracker
from framepipe.wire.messages import AcquisitionStart, EndOfStream, ErrorReply, Heartbeat, Welcome
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
        #: the stream's end, once it came (reset by the next acquisition's start)
        self.eos: EndOfStream | None = None
        #: the acquisition under way on the stream (its start message), if any
        self.acquisition: AcquisitionStart | None = None
        #: the publisher's welcome header, with the sync's ``rtt_ns`` and ``clock_offset_ns``
        self.welcome: dict[str, Any] = {}
        #: the instance of the stream's binding side we said hello to (see Heartbeat)
        self.instance: str | None = None
        #: monotonic time of the last message of any kind (a heartbeat too)
        self.last_heard = time.monotonic()
        #: a heartbeat came from another instance: the binding side restarted, say hello again
        self.upstream_restarted = False

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
        # The first answer may have waited (the publisher starting, a deferred welcome), so
        # its round trip says little about the clocks: measure them on a fresh exchange,
        # answered at once now that the server knows us.
        try:
            fresh = exchange(self.owner.ctx, self.sync_url, "hello", self.owner.name, timeout_s=2.0)
            if isinstance(fresh.reply.control, Welcome):
                answer, welcome = fresh, fresh.reply.control
        except SyncError:
            pass  # the first answer's figures stand, with their (larger) rtt bound
        self.welcome = answer.header()
        if "clock_offset_ns" in self.welcome:
            self.welcome["clock_offset_bound_ns"] = self.welcome["rtt_ns"] // 2
        self.instance = welcome.instance
        self.upstream_restarted = False
        self.last_heard = time.monotonic()
        if welcome.acquisition is not None and self.acquisition is None:
            try:  # joined an acquisition under way (a restart): follow it from here
                self.acquisition = AcquisitionStart.model_validate(welcome.acquisition)
                self.eos = None
                self.sequence.start_at(welcome.seq or 0)
            except ValueError:
                self.owner.log.warning("the welcome's acquisition is malformed: ignored")
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
        self.last_heard = time.monotonic()
        if isinstance(msg.control, Heartbeat):
            if self.instance is not None and msg.control.instance not in (None, self.instance):
                self.upstream_restarted = True
            return None
        if isinstance(msg.control, AcquisitionStart):
            if self.acquisition is not None and self.acquisition.acquisition == msg.control.acquisition:
                return None  # already following it (joined through the welcome)
            self.acquisition = msg.control
            self.eos = None
            self.sequence.start_at(msg.control.seq or 0)
            return msg
        if isinstance(msg.control, EndOfStream):
            if self.eos == msg.control:
                return None  # a repeat (it goes out until every subscriber said bye)
            self.eos = msg.control
            self.acquisition = None
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
