"""The binding side of a broadcast stream: an XPUB socket plus its REQ/REP synchronisation.

Used by the publisher (frames) and the sink (results). XPUB with ``XPUB_VERBOSE`` shows
us subscriptions as they arrive, which closes the slow-joiner gap the zguide warns
about: a subscriber's hello alone does not prove its subscription reached us. Each
subscriber also subscribes to a marker topic with its name, so we know whose arrived.

Policies: ``drop`` — PUB drops at the per-subscriber high-water mark (never blocks the
source; subscribers count the gaps from sequence numbers); ``lossless`` — ``XPUB_NODROP``,
the sender waits while any subscriber is full.

Same-host subscribers (``ring``, wire/ring.py): a subscriber whose hello says it runs on
this host is offered the stream's shared-memory ring in its welcome; once it read the
ring's nonce there it subscribes to descriptors (``slot``) and the stream's control kinds
instead of everything, plus a marker (RING_TOPIC + its name) that tells us so — and,
withdrawn by XPUB when its connection closes, that it is gone and holds no slot any more.
Each frame is written into the ring once for them; pixels go on the socket only while
someone subscribes to everything (a subscriber on another host, a tool).

The preview: a second socket with the same messages for passive watchers (the live
view), always dropping at a small high-water mark whatever the policy, so a watcher
that is slow, stopped (Ctrl-Z) or gone never holds up the stream. ``XPUB_NODROP``
applies to every pipe of a socket, so the watchers need a socket of their own. Nothing
is sent on it while nobody is subscribed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

import zmq

from framepipe.core.errors import ProtocolError, SyncError
from framepipe.core.ledger import IdRanges
from framepipe.wire.messages import AcquisitionStart, Bye, Done, EndOfStream, Heartbeat, Hello, Request, Welcome
from framepipe.wire.protocol import RING_TOPIC, SUBSCRIBER_TOPIC, encode_control, encode_slot, to_ranges
from framepipe.wire.ring import Ring, RingError, host_identity, remove_stale
from framepipe.wire.sockets import POLL_MS, SocketOwner
from framepipe.wire.sync import SyncRequest, SyncServer

#: how often an end-of-stream is repeated while waiting for subscribers' byes
EOS_REPEAT_S = 0.2
#: after a stop, how long a lossless send still waits for a full subscriber
STOP_SEND_S = 1.0
#: at most one "waiting for a slow subscriber" line per this many seconds
BLOCKED_LOG_S = 5.0
#: the preview's send high-water mark per watcher, in messages: a watcher shows the
#: newest frame, so more would only be older frames
PREVIEW_HWM = 2
#: while someone watches the preview, its end of stream is repeated for this long at least
#: (every EOS_REPEAT_S): a watcher that is only behind drains and gets one of them
PREVIEW_EOS_S = 1.0


class Broadcast:
    """One stream: XPUB + ROUTER sync, with sequence numbers and end-of-stream handling."""

    def __init__(
        self,
        owner: SocketOwner,
        *,
        stream: str,
        pub_url: str,
        sync_url: str,
        subscribers: list[str],
        hwm: int,
        lossless: bool,
        camera: dict[str, Any] | None = None,
        preview_url: str | None = None,
        ring_prefix: str | None = None,
        ring_slots: int = 0,
        ring_row_offset: int = 0,
        on_reader_gone: Callable[[int], None] | None = None,
    ):
        """``ring_prefix``: offer same-host subscribers a shared-memory ring of
        ``ring_slots`` frames, named ``ring_prefix…`` (None: TCP only). The sink, which
        forwards descriptors of its workers' rings, makes a one-slot ring only for the
        probe, and its subscribers' rows start at ``ring_row_offset`` (row 0 is its own);
        ``on_reader_gone(row)`` is called when a ring reader's connection drops."""
        self.owner = owner
        self.stream = stream
        self.expected = list(subscribers)
        self.lossless = lossless
        #: the camera's metadata, sent in every welcome (the frames stream)
        self.camera = camera
        self.pub = owner.socket(zmq.XPUB, sndhwm=hwm)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        if lossless:
            self.pub.setsockopt(zmq.XPUB_NODROP, 1)
            self.pub.setsockopt(zmq.SNDTIMEO, POLL_MS)  # see _wait_and_send
        owner.bind(self.pub, pub_url, stream)
        #: passive watchers' socket (see the module docstring); None: no preview
        self.preview: zmq.Socket[Any] | None = None
        #: someone is subscribed to the preview (XPUB tells us: first in, last out)
        self.preview_watched = False
        if preview_url is not None:
            self.preview = owner.socket(zmq.XPUB, sndhwm=PREVIEW_HWM)
            owner.bind(self.preview, preview_url, f"{stream}-preview")
        router = owner.socket(zmq.ROUTER)
        owner.bind(router, sync_url, f"{stream}-sync")
        self.sync = SyncServer(router, owner.max_payload)
        #: subscribers that said hello / bye (name → their request)
        self.hellos: dict[str, Hello] = {}
        self.byes: dict[str, Bye] = {}
        self.subscriptions = 0
        #: subscribers whose own subscription reached this XPUB (by their marker topic)
        self.subscribed: set[str] = set()
        self.seq = 0
        #: ids published, as ranges (bounded memory on endless runs)
        self.published_ids = IdRanges()
        self.blocked_s = 0.0
        self._next_blocked_log = 0.0
        #: sync requests the owner answers itself (e.g. the sink's ventilator hello):
        #: (peer, the decoded request; its ``control`` is the validated model)
        self.deferred: list[SyncRequest] = []
        #: the acquisition under way (its start message), for late joiners' welcomes
        self.acquisition: AcquisitionStart | None = None
        #: every bye received, in order, for the owner to read (its acquisition reports)
        self.reports: list[Bye] = []
        #: this instance of the stream: a subscriber that sees another one in a heartbeat
        #: knows the binding side restarted, and says hello again
        self.instance = secrets.token_hex(6)
        self.ring_prefix = ring_prefix
        self.ring_slots = ring_slots
        self.ring_row_offset = ring_row_offset
        self.on_reader_gone = on_reader_gone
        #: the shared-memory ring (made by :meth:`make_ring`), None: TCP only
        self.ring: Ring | None = None
        self._rings_made = 0
        self.host = host_identity()
        #: subscribers that take their frames from the ring (their marker arrived)
        self.on_ring: set[str] = set()
        #: someone subscribes to everything (pixels wanted on the socket)
        self.pixels_wanted = False
        #: frames the ring had no free slot for (drop policy), so ring readers missed them
        self.ring_drops = 0
        #: the last frame's message as it went on the socket (None: by the ring only)
        self.pixels_sent: list[Any] | None = None
        if ring_prefix is not None:
            for name in remove_stale(ring_prefix):
                owner.log.info("removed %s, left in /dev/shm by a process that no longer exists", name)
        self._next_heartbeat = 0.0

    # ---------------------------------------------------------------- housekeeping
    def sockets(self) -> list[zmq.Socket[Any]]:
        return [self.pub, self.sync.sock] + ([self.preview] if self.preview is not None else [])

    def service(self, events: dict[Any, int], *, defer: Callable[[str, str], bool] | None = None) -> None:
        """Handle subscription changes and sync requests that ``poll`` reported.

        Requests for which ``defer(kind, name)`` is true are queued in ``deferred`` for
        the owner to answer (the sink answers the ventilator only when it is ready).
        """
        if events.get(self.pub, 0) & zmq.POLLIN:
            while True:
                try:
                    msg = self.pub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                on, topic = msg[:1], msg[1:]
                if topic.startswith(RING_TOPIC):
                    self._ring_reader(topic[len(RING_TOPIC) :].decode(errors="replace"), on == b"\x01")
                elif topic == b"":
                    self.pixels_wanted = on == b"\x01"
                    self.subscriptions += 1 if on == b"\x01" else -1 if self.subscriptions else 0
                elif topic.startswith(SUBSCRIBER_TOPIC):
                    name = topic[len(SUBSCRIBER_TOPIC) :].decode(errors="replace")
                    if on == b"\x01":
                        self.subscribed.add(name)
                    elif on == b"\x00":
                        self.subscribed.discard(name)
                elif on == b"\x01":
                    self.subscriptions += 1
                elif on == b"\x00":
                    self.subscriptions = max(0, self.subscriptions - 1)
        if self.preview is not None and events.get(self.preview, 0) & zmq.POLLIN:
            while True:
                try:
                    msg = self.preview.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if msg[1:] == b"":  # everything: the watchers' subscription (not XPUB_VERBOSE: first in, last out)
                    self.preview_watched = msg[:1] == b"\x01"
        if events.get(self.sync.sock, 0) & zmq.POLLIN:
            while self.sync.sock.poll(0):
                try:
                    received = self.sync.receive()
                except ProtocolError as e:
                    self.owner.reject(e, f"{self.stream}-sync")
                    continue
                peer, asked = received.identity, received.message
                request = asked.control
                if isinstance(request, Request) and defer is not None and defer(asked.kind, request.name):
                    self.deferred.append(received)
                elif isinstance(request, Hello):
                    again = request.name in self.hellos
                    self.hellos[request.name] = request
                    if again:
                        self.owner.log.debug("%s said hello again", request.name)
                    elif request.name not in self.expected:
                        self.owner.log.info("%s joined %s (not in the configured list)", request.name, self.stream)
                    else:
                        self.owner.log.info("%s said hello", request.name)
                    acquisition = self.acquisition.model_dump(exclude_none=True) if self.acquisition else None
                    self.sync.reply(
                        peer,
                        Welcome(
                            stream=self.stream,
                            seq=self.seq,
                            camera=self.camera,
                            acquisition=acquisition,
                            instance=self.instance,
                            **self._ring_offer(request),
                        ),
                    )
                elif isinstance(request, Bye):
                    current = self.acquisition.acquisition if self.acquisition is not None else None
                    if request.acquisition is None or request.acquisition == current:
                        self.byes[request.name] = request
                    self.reports.append(request)
                    del self.reports[:-64]  # bounded: the owner reads them as they come
                    counts = request.model_dump(
                        exclude_none=True, exclude={"v", "kind", "name", "t_send_ns", "subscribers"}
                    )
                    self.owner.log.info(
                        "%s said bye: %s", request.name, bye_text(counts), extra={"fields": counts, "event": "bye"}
                    )
                    self.sync.reply(peer, Done())
                else:
                    error = ProtocolError(f"unexpected {asked.kind} request", kind="bad_kind")
                    self.owner.reject(error, f"{self.stream}-sync")
                    self.sync.refuse(peer, str(error))

    # ---------------------------------------------------------------- the ring
    def make_ring(self, frame_bytes: int) -> None:
        """Make (or, for frames that outgrew it, replace) the ring. A ring that cannot be
        made (no room in /dev/shm) leaves the stream on TCP, with a warning."""
        if self.ring_prefix is None or (self.ring is not None and self.ring.slot_bytes >= frame_bytes):
            return
        old, self.ring = self.ring, None
        self._rings_made += 1
        try:
            self.ring = Ring.create(
                f"{self.ring_prefix}{self.instance}-{self._rings_made}",
                slots=self.ring_slots,
                slot_bytes=frame_bytes,
                rows=max(1, min(self.ring_row_offset + len(self.expected), 64)),
            )
        except RingError as e:
            self.owner.log.warning("%s: no shared-memory ring, frames go by TCP: %s", self.stream, e)
            self.ring_prefix = None
        if old is not None:
            old.close()  # readers keep their mapping; the name goes

    def close_ring(self) -> None:
        """Remove the ring (the owner's teardown): nothing is left in /dev/shm."""
        if self.ring is not None:
            self.ring.close()
            self.ring = None

    def _ring_offer(self, hello: Hello) -> dict[str, Any]:
        """Welcome fields offering the ring to a subscriber on this host (one of the
        configured ones: each has its row), else none."""
        if self.ring is None or hello.host != self.host or hello.name not in self.expected:
            return {}
        row = self.row_of(hello.name)
        if row >= self.ring.rows:
            return {}
        return {"ring": self.ring.name, "ring_nonce": self.ring.nonce, "ring_row": row}

    def _ring_reader(self, name: str, on: bool) -> None:
        """A subscriber's ring marker came (it reads the ring) or went (it is gone: the
        slots it held are free)."""
        if name not in self.expected:
            return
        row = self.row_of(name)
        if on:
            self.on_ring.add(name)
            self.owner.log.info("%s takes %s from shared memory", name, self.stream)
        elif name in self.on_ring:
            self.on_ring.discard(name)
            if self.ring is not None:
                self.ring.drop_row(row)
            if self.on_reader_gone is not None:
                self.on_reader_gone(row)

    def row_of(self, name: str) -> int:
        """A configured subscriber's row in the rings it reads."""
        return self.ring_row_offset + self.expected.index(name)

    def rows_not_on_ring(self) -> set[int]:
        """Rows of configured subscribers that do not read rings now (not here, on another
        host, or not yet switched): whoever forwards a ring's descriptor releases for them."""
        return {self.row_of(n) for n in self.expected if n not in self.on_ring}

    def forward_ring(
        self, header: dict[str, Any], where: tuple[str, int, int], pixels: Callable[[], list[Any]], frame_id: int
    ) -> bool:
        """Forward a message whose data is in another's ring (the sink: a worker's result):
        its descriptor to the subscribers reading rings, its data (``pixels()``: copies, as
        the slot is released right after) to the others. False as :meth:`publish`."""
        readers = [self.row_of(n) for n in self.on_ring]
        if self.on_ring and not self._send(encode_slot(header, *where, readers=readers)):
            return False
        # the arrays only for those that take everything (another host, a tool): ring readers
        # had the descriptor, and with nobody at all nothing is copied
        return self.publish(pixels, frame_id, in_ring=True)

    def transport(self) -> dict[str, str]:
        """Each subscriber's path: ``shared memory`` or ``tcp`` (status and tests)."""
        return {n: "shared memory" if n in self.on_ring else "tcp" for n in sorted(self.subscribed)}

    def _ring_slot(self) -> int | None:
        """A free slot; lossless waits (serving sync) while the ring is full, drop gives None."""
        ring = self.ring
        assert ring is not None
        slot = ring.free_slot()
        if slot is not None or not self.lossless:
            return slot
        t0 = time.monotonic()
        give_up: float | None = None
        try:
            while slot is None and self.ring is ring:
                now = time.monotonic()
                if now >= self._next_blocked_log:
                    # the same words as a full socket's wait (_wait_and_send): it is the same lossless wait
                    self.owner.log.info("%s: waiting for a slow subscriber (lossless): its ring is full", self.stream)
                    self._next_blocked_log = now + BLOCKED_LOG_S
                if self.owner.stopping:
                    give_up = give_up or now + STOP_SEND_S
                    if now > give_up:
                        return None
                self.service(self.poll(timeout_ms=5))
                slot = ring.free_slot()
            return slot
        finally:
            self.blocked_s += time.monotonic() - t0

    def poll(self, extra: tuple[zmq.Socket[Any], ...] = (), timeout_ms: int = POLL_MS) -> dict[Any, int]:
        poller = zmq.Poller()
        for sock in (*self.sockets(), *extra):
            poller.register(sock, zmq.POLLIN)
        return dict(poller.poll(timeout_ms))

    def missing_subscribers(self) -> list[str]:
        return [n for n in self.expected if n not in self.hellos]

    def all_here(self) -> bool:
        """Every configured subscriber said hello *and* its subscription arrived: a
        stranger's subscription (a viewer, a test probe) cannot stand in for it."""
        return not self.missing_subscribers() and all(n in self.subscribed for n in self.expected)

    def wait_for_subscribers(self, timeout_s: float) -> None:
        """Block until every configured subscriber has said hello and subscribed."""
        deadline = time.monotonic() + timeout_s
        if self.expected:
            self.owner.log.info("waiting for subscribers: %s", ", ".join(self.expected))
        while not self.all_here():
            if self.owner.stopping:
                raise SyncError(f"stopped while waiting for subscribers of {self.stream}")
            if time.monotonic() > deadline:
                raise SyncError(
                    f"{self.stream}: subscribers did not arrive within {timeout_s:g} s: "
                    f"{', '.join(self.missing_subscribers()) or 'subscription not seen'}"
                    " (start them, or change the subscribers list in the config)"
                )
            self.service(self.poll())

    def _owe_bye(self) -> list[str]:
        """Subscribers to wait for at the end: said hello, no bye yet, and still subscribed
        (by their marker topic). One that went away (stopped, killed) is not waited for:
        XPUB withdraws its marker when its connection closes; nor is a bare hello."""
        return [n for n in self.hellos if n not in self.byes and n in self.subscribed]

    # ---------------------------------------------------------------- sending
    def start(self, message: AcquisitionStart) -> bool:
        """Begin an acquisition on the stream: its start message goes out (as a frame
        would: lossless waits for a full subscriber), and the byes start again.

        Returns False if the owner was stopped while a subscriber stayed full.
        """
        message = message.model_copy(update={"seq": self.seq})
        self.acquisition = message
        self.byes.clear()
        self.published_ids = IdRanges()
        parts = encode_control(message)
        if not self.lossless:
            self.pub.send_multipart(parts)
        else:
            try:
                self.pub.send_multipart(parts, flags=zmq.NOBLOCK)
            except zmq.Again:
                if not self._wait_and_send(parts):
                    return False
        if self.preview is not None:
            self.preview.send_multipart(parts, flags=zmq.NOBLOCK)
        self._next_heartbeat = time.monotonic() + 1.0
        return True

    def heartbeat(self, interval_s: float) -> None:
        """While nothing else goes out: a heartbeat every ``interval_s``, so subscribers know
        the stream is alive (and which instance of it), never waiting for a full one."""
        now = time.monotonic()
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + interval_s
        try:
            self.pub.send_multipart(encode_control(Heartbeat(name=self.stream, instance=self.instance)), zmq.NOBLOCK)
        except zmq.Again:
            pass  # a full subscriber has frames to read first: it knows we are alive

    def publish(
        self,
        parts: list[Any] | Callable[[], list[Any]],
        frame_id: int,
        frame: Any = None,
        header: dict[str, Any] | None = None,
        *,
        in_ring: bool = False,
    ) -> bool:
        """Send one data message; in lossless mode waits (serving sync) while subscribers are full.

        ``frame`` and ``header`` (the frame's array and header; ``parts`` is its raw or
        compressed message): written into the ring for the subscribers that read it
        there, who get its descriptor instead (``in_ring``: a descriptor already went, the
        sink's forward of a worker's ring). ``parts`` may be a function making them: it
        is called only if the pixels go on the socket (compressing costs CPU), and
        :attr:`pixels_sent` is what went (None: the ring only).
        Returns False if the owner was stopped and the subscribers stayed full for
        ``STOP_SEND_S`` more (a frame already acquired gets that long to go out).
        """
        if self.on_ring and frame is not None and header is not None and self.ring is not None:
            self.make_ring(frame.nbytes)
            slot = self._ring_slot() if self.ring is not None else None
            if slot is not None and self.ring is not None:
                rows = {self.row_of(n) for n in self.on_ring}
                gen = self.ring.write(slot, frame, rows, self.seq)
                if not self._send(encode_slot(header, self.ring.name, slot, gen, readers=rows)):
                    return False
                in_ring = True
            elif self.owner.stopping and self.lossless:
                return False
            else:
                self.ring_drops += 1
        self.pixels_sent = None
        # the data goes on the socket unless its descriptor went instead and nobody else
        # (another host, a tool) takes everything
        on_socket = self.pixels_wanted or not in_ring
        if on_socket or self.preview_watched:
            message = parts() if callable(parts) else parts
            if on_socket:
                if not self._send(message):
                    return False
                self.pixels_sent = message
            if self.preview_watched:
                assert self.preview is not None
                self.preview.send_multipart(message, copy=False, flags=zmq.NOBLOCK)  # drops when full, never waits
        self.seq += 1
        self.published_ids.add(frame_id)
        self._next_heartbeat = time.monotonic() + 1.0
        return True

    def _send(self, parts: list[Any]) -> bool:
        if not self.lossless:
            self.pub.send_multipart(parts, copy=False)
        else:
            try:
                self.pub.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
            except zmq.Again:
                if not self._wait_and_send(parts):
                    return False
        return True

    def _wait_and_send(self, parts: list[Any]) -> bool:
        """A subscriber is full (lossless): wait inside zmq's blocking send, serving sync
        between tries of ``POLL_MS``.

        Not poll(POLLOUT): an XPUB reports POLLOUT even when ``XPUB_NODROP`` would refuse
        the message (libzmq #1597), so polling for it spins a core at 100 % — which, on a
        machine whose cores the subscribers need, halved the stream's rate. A blocking
        send sleeps until a subscriber's pipe drains below its low-water mark.
        """
        t0 = now = time.monotonic()
        if now >= self._next_blocked_log:  # info, not a warning: lossless means this
            self.owner.log.info("%s: waiting for a slow subscriber (lossless)", self.stream)
            self._next_blocked_log = now + BLOCKED_LOG_S
        give_up: float | None = None
        try:
            while True:
                try:
                    self.pub.send_multipart(parts, copy=False)  # SNDTIMEO = POLL_MS (lossless)
                    return True
                except zmq.Again:
                    now = time.monotonic()
                    if self.owner.stopping:
                        give_up = give_up or now + STOP_SEND_S
                        if now > give_up:
                            return False
                    self.service(self.poll(timeout_ms=0))
        finally:
            self.blocked_s += time.monotonic() - t0

    def finish(
        self,
        timeout_s: float,
        reason: str = "complete",
        frame_ids: list[int] | None = None,
        camera_lost: int | None = None,
        *,
        stays_up: bool = False,
        extra: tuple[zmq.Socket[Any], ...] = (),
        on_extra: Callable[[dict[Any, int]], None] | None = None,
    ) -> list[str]:
        """Send end-of-stream until every subscriber said bye (or timeout); return who did not.

        ``frame_ids``: the ids the stream should have carried (default: those published
        here), which subscribers compare with what they hold. ``camera_lost``: frames the
        camera itself lost (the frames stream). ``stays_up``: the acquisition ends, the
        deployment does not (subscribers wait for the next start). ``extra`` sockets are
        polled meanwhile and handed to ``on_extra`` (the publisher's control endpoint).
        """
        if self.acquisition is None:
            self.byes.clear()  # the deployment's end: every subscriber owes a bye again
        eos = encode_control(
            EndOfStream(
                stream=self.stream,
                reason=reason,
                seq_last=self.seq - 1,
                count=self.seq,
                frame_ids=self.published_ids.ranges() if frame_ids is None else to_ranges(frame_ids),
                camera_lost=camera_lost,
                acquisition=self.acquisition.acquisition if self.acquisition is not None else None,
                stays_up=True if stays_up else None,
            )
        )
        waiting = self._owe_bye()
        start = time.monotonic()
        deadline = start + timeout_s
        # the preview drops what a watcher cannot take, the end of stream too: repeat it a while
        preview_until = start + PREVIEW_EOS_S if self.preview_watched else start
        next_send = 0.0
        sent = False
        while True:
            now = time.monotonic()
            if now >= next_send:
                try:
                    self.pub.send_multipart(eos, flags=zmq.NOBLOCK)
                    sent = True
                except zmq.Again:
                    pass  # a full subscriber: the repeat gets through once it drains
                if self.preview is not None:
                    self.preview.send_multipart(eos, flags=zmq.NOBLOCK)  # watchers see the end too
                next_send = now + EOS_REPEAT_S
            waiting = self._owe_bye()
            # subscribers that never said hello here (they rejoined after a restart of
            # this end) still need one end of stream that went out
            if (not waiting and sent and now >= preview_until) or now >= deadline:
                break
            events = self.poll(extra, timeout_ms=int(EOS_REPEAT_S * 1000))
            self.service(events)
            if on_extra is not None and any(s in events for s in extra):
                on_extra(events)
        if stays_up:
            self.acquisition = None
        if waiting:
            self.owner.log.warning("%s: no bye from %s within %g s", self.stream, ", ".join(waiting), timeout_s)
        return waiting


def bye_text(counts: dict[str, Any]) -> str:
    """A subscriber's bye in words: ``acquisition 1, written 40 of 40, missing 0, gaps 0,
    complete, data/x.h5`` (a flag as its word, never ``True``/``None``)."""
    parts: list[str] = []
    if "acquisition" in counts:
        parts.append(f"acquisition {counts['acquisition']}")
    done = next((k for k in ("written", "received") if k in counts), None)
    if done is not None:
        of = f" of {counts['expected']}" if "expected" in counts else ""
        parts.append(f"{done} {counts[done]}{of}")
    for key, value in counts.items():
        if key in ("acquisition", "expected", "path", "error", done) or value is None:
            continue
        if isinstance(value, bool):
            parts.append(key if value else f"not {key}")
        elif isinstance(value, (int, float, str)):
            parts.append(f"{key.replace('_', ' ')} {value}")
    if counts.get("error"):
        parts.append(f"error: {counts['error']}")
    if counts.get("path"):
        parts.append(str(counts["path"]))
    return ", ".join(parts)
