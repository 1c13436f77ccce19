"""The connecting side of a broadcast stream: SUB socket, hello/bye, gap counting."""

from __future__ import annotations

import time
from typing import Any

import zmq

from framepipe.core.errors import ProtocolError, SyncError
from framepipe.core.ledger import SequenceTracker
from framepipe.wire.messages import AcquisitionStart, EndOfStream, ErrorReply, Heartbeat, Welcome
from framepipe.wire.protocol import (
    SLOT_KIND,
    STREAM_CONTROL_KINDS,
    Message,
    decode,
    kind_topic,
    ring_topic,
    subscriber_topic,
)
from framepipe.wire.ring import RingError, RingReader, host_identity
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
        shared_memory: bool = False,
    ):
        """``sequence``: the tracker that counts this stream's gaps, when the owner keeps one
        already (the recorder's series reports them in its ledger); a new one otherwise.
        ``shared_memory``: take the frames from the publisher's ring when it offers one
        (same host); the owner then calls :meth:`release` for every frame it is done with."""
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
        self.shared_memory = shared_memory
        #: the rings this subscriber reads (None: frames come by TCP)
        self.rings: RingReader | None = None
        self._pixels_subscribed = False
        #: the last data message's sequence number (a frame sent both ways is taken once)
        self._last_seq: int | None = None

    def hello(self, timeout_s: float) -> Welcome:
        """Tell the publisher we are here; returns its welcome (stream metadata).

        Raises SyncError if it does not answer in time, or refuses (saying why).
        """
        assert self.owner.ctx is not None
        where: dict[str, Any] = {"host": host_identity()} if self.shared_memory else {}
        answer = exchange(
            self.owner.ctx,
            self.sync_url,
            "hello",
            self.owner.name,
            timeout_s=timeout_s,
            should_stop=lambda: self.owner.stopping,
            **where,
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
            fresh = exchange(self.owner.ctx, self.sync_url, "hello", self.owner.name, timeout_s=2.0, **where)
            if isinstance(fresh.reply.control, Welcome):
                answer, welcome = fresh, fresh.reply.control
        except SyncError:
            pass  # the first answer's figures stand, with their (larger) rtt bound
        self.welcome = answer.header()
        if "clock_offset_ns" in self.welcome:
            self.welcome["clock_offset_bound_ns"] = self.welcome["rtt_ns"] // 2
        self.instance = welcome.instance
        self.upstream_restarted = False
        self._last_seq = None
        self._choose_path(welcome)
        self.last_heard = time.monotonic()
        if welcome.acquisition is not None and self.acquisition is None:
            try:  # joined an acquisition under way (a restart): follow it from here
                self.acquisition = AcquisitionStart.model_validate(welcome.acquisition)
                self.eos = None
                self.sequence.start_at(welcome.seq or 0)
            except ValueError:
                self.owner.log.warning("the welcome's acquisition is malformed: ignored")
        return welcome

    def _choose_path(self, welcome: Welcome) -> None:
        """Shared memory if the publisher offered its ring and this process can read it
        (its nonce, read there); TCP otherwise, and whenever in doubt."""
        if self.rings is not None or not self.shared_memory:
            return
        if welcome.ring is None or welcome.ring_nonce is None or welcome.ring_row is None:
            return
        rings = RingReader(row=welcome.ring_row)
        try:
            rings.probe(welcome.ring, welcome.ring_nonce)
        except RingError as e:
            self.owner.log.warning(
                "%s: the publisher's ring is not readable here, frames come by TCP: %s", self.stream, e
            )
            return
        self.rings = rings
        # the results stream also carries results as arrays: those of workers on other hosts,
        # which the sink forwards as they came (a result in a ring that also goes out as
        # arrays, for another subscriber, is taken once: see the seq check in receive)
        kinds = (SLOT_KIND, *STREAM_CONTROL_KINDS, *(("result",) if self.stream == "results" else ()))
        for kind in kinds:
            self.sub.setsockopt(zmq.SUBSCRIBE, kind_topic(kind))
        self.sub.setsockopt(zmq.SUBSCRIBE, ring_topic(self.owner.name))
        # everything (the pixels) stays subscribed until the first descriptor comes: a SUB
        # also filters what it already queued, so dropping it now could lose a frame
        self._pixels_subscribed = True
        self.owner.log.info("%s: frames from shared memory (ring %s)", self.stream, welcome.ring)

    @property
    def transport(self) -> str:
        """How frames reach this subscriber: ``shared memory`` or ``tcp``."""
        return "shared memory" if self.rings is not None else "tcp"

    def release(self, msg: Message) -> bool:
        """Done with a frame; for one read from the ring, its slot goes back. Returns False
        if the slot was rewritten while it was in use (what was read may be torn: counted)."""
        if msg.ring_slot is None or self.rings is None:
            return True
        name, slot, gen = msg.ring_slot
        ring = self.rings.ring(name)
        intact = ring.still(slot, gen)
        self.rings.release(msg.header)
        if not intact:
            self.owner.reject(
                ProtocolError(
                    f"slot {slot} of {name} rewritten while frame {msg.frame_id} was read", kind="stale_slot"
                ),
                self.stream,
            )
        return intact

    def release_all(self) -> None:
        """Give back every slot (an acquisition is over: nothing of it is used any more)."""
        if self.rings is not None:
            self.rings.release_all()

    def close(self) -> None:
        """Unmap the rings (the owner's teardown)."""
        if self.rings is not None:
            self.rings.close()

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
            self._last_seq = None
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
        if self.rings is not None and msg.ring_slot is None and msg.seq == self._last_seq:
            return None  # while switching to the ring, a frame came both ways: once is enough
        if msg.ring_slot is not None:
            if self.rings is None:
                return None  # a descriptor for ring readers (we subscribe to everything)
            if self.rings.row not in msg.header.get("readers", ()):
                # not written for us: sent before the publisher knew we read its ring (our
                # subscription to descriptors can be in place before it heard our marker);
                # the frame comes as pixels, which we still subscribe to
                return None
            if self._pixels_subscribed:
                # the publisher sends us descriptors now, and every frame before this one
                # came already (one pipe, in order): the pixels are no longer needed
                self.sub.setsockopt(zmq.UNSUBSCRIBE, b"")
                self._pixels_subscribed = False
            try:
                msg.in_ring(self.rings.read(msg.header))
            except ProtocolError as e:
                self.owner.reject(e, self.stream)
                return None
        self._last_seq = msg.seq
        skipped = self.sequence.see(msg.seq)
        if skipped and msg.ring_slot is not None and msg.kind == "frame" and self.rings is not None:
            # descriptors were dropped on the way: their slots would stay ours forever (the
            # publisher's ring; a worker's results ring is released by the sink for rows it
            # does not hand descriptors to)
            self.rings.release_missed(msg.ring_slot[0], msg.seq)
        if skipped:
            self.owner.warn.warning(
                f"gap:{self.stream}", "%s: %d message(s) missed before seq %d", self.stream, skipped, msg.seq
            )
        return msg
