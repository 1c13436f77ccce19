"""The publisher: owns the camera and the deployment's acquisitions, and broadcasts frames.

Each acquisition is one series on the frames stream (as DECTRIS stream v2 does): a start
message (id, name, the camera's settings and metadata), the frames, an end of stream (why,
the frame ids the camera produced). Everything downstream follows those boundaries, and
every file and summary is judged against that end message.

Two ways to run:

- **one acquisition** (``run.serve = false``, ``framepipe run``): once the configured
  subscribers are here, ``camera.count`` frames named after the run, then an end of stream
  that tells everyone to exit;
- **standing** (``run.serve = true``, ``framepipe run --serve``, systemd units): idle until
  an operator's ``acquire`` on the control endpoint; between acquisitions a heartbeat on the
  stream; ``shutdown`` ends the deployment.

The control endpoint (a ROUTER on ``publisher.control_port``) answers ``acquire``, and the
commands ``stop`` (the camera stops; what it took drains and is recorded), ``snap`` (the
newest frame, or one grabbed now when idle), ``state``, ``wait`` (answered when the
acquisition is accounted for, with its summary) and ``shutdown``. A refused request gets one
line saying why, and changes nothing. The decisions about acquisitions (ids, phases,
reports, ``complete``) are :class:`framepipe.core.acquisition.AcquisitionBook`'s.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import numpy as np
import zmq

from framepipe.cameras import Camera, open_camera
from framepipe.config import CameraConfig, Config, PublisherConfig, run_id_now
from framepipe.core import bitshuffle
from framepipe.core.acquisition import AcquisitionBook, Phase
from framepipe.core.counters import Count
from framepipe.core.errors import CameraError, ConfigError, ProtocolError
from framepipe.core.frame import Frame
from framepipe.runtime.component import Component
from framepipe.runtime.status import Queue, StatusParts, StreamPeers
from framepipe.wire.broadcast import Broadcast
from framepipe.wire.messages import Acquire, AcquisitionStart, AcquisitionState, Command, one_line
from framepipe.wire.protocol import data_header, encode_chunk, encode_data
from framepipe.wire.ring import segment_prefix
from framepipe.wire.sync import SyncServer

#: after a stop by signal, how long to wait for subscribers' byes
STOP_GRACE_S = 3.0
#: settings recorded with every acquisition (what the camera config says for it)
RECORDED_SETTINGS = (
    "kind",
    "width",
    "height",
    "dtype",
    "fps",
    "exposure_us",
    "gain",
    "pixel_format",
    "offset_x",
    "offset_y",
    "serial",
    "path",
    "device",
    "url",
)


def settings_of(cfg: CameraConfig) -> dict[str, Any]:
    """The camera settings an acquisition records (from its own config, never a recorder's)."""
    return {k: getattr(cfg, k) for k in RECORDED_SETTINGS if getattr(cfg, k) is not None}


class Publisher(Component):
    """Camera → PUB frames, one acquisition after another; the control endpoint."""

    role = "publisher"

    def __init__(self, config: Config, camera: Camera | None = None, name: str | None = None):
        super().__init__(config, name)
        self._camera = camera
        self.book = AcquisitionBook(history=config.run.history)
        #: the deployment's id: in every start message, so every file of it carries one id
        self.run_id = config.run.id or run_id_now()
        self.camera: Camera | None = None
        self.latest: Frame | None = None
        #: operators waiting for an acquisition to be accounted for: (peer, acquisition id)
        self._waiting: list[tuple[bytes, int | None]] = []
        self._stop_acquisition = False
        self._shutdown = False

    def setup(self) -> None:
        # the camera first: a camera that cannot open binds nothing
        cfg = self.config.publisher
        camera = self._camera or open_camera(self.config.camera)
        camera.chunks_wanted = self.wire_encoding == "bitshuffle-lz4"
        camera.open()
        self.camera = camera
        try:
            self.camera_metadata = camera.metadata()
            self.stream = self._broadcast(cfg)
            cam = self.config.camera
            raw = cam.width * cam.height * np.dtype(cam.dtype).itemsize
            # a compressed chunk of noise is a little larger than the pixels: room for it
            self.stream.make_ring(raw + raw // 64 + 4096)
            router = self.socket(zmq.ROUTER)
            self.bind(router, cfg.bind_url(cfg.control_port), "acquisition-control")
            self.control = SyncServer(router, 0)
        except BaseException:
            # setup() did not finish, so teardown() will not run
            stream: Broadcast | None = getattr(self, "stream", None)
            if stream is not None:
                stream.close_ring()
            camera.close()
            raise

    def _broadcast(self, cfg: PublisherConfig) -> Broadcast:
        transport = self.config.transport
        return Broadcast(
            self,
            stream="frames",
            pub_url=cfg.bind_url(cfg.frames_port),
            sync_url=cfg.bind_url(cfg.sync_port),
            preview_url=cfg.bind_url(cfg.preview_port),
            subscribers=cfg.subscribers,
            hwm=cfg.hwm_frames,
            lossless=cfg.policy == "lossless",
            camera=self.camera_metadata,
            ring_prefix=segment_prefix(self.config.run.name, "frames") if transport.shared_memory else None,
            ring_slots=transport.ring_frames,
        )

    def teardown(self) -> None:
        stream: Broadcast | None = getattr(self, "stream", None)
        if stream is not None:
            stream.close_ring()
        if self.camera is not None:
            self.camera.close()

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        cfg = self.config.publisher
        self.open()
        ring = self.stream.ring
        shared = f"ring {ring.name} ({ring.slots} × {ring.slot_bytes / 1e6:.1f} MB)" if ring is not None else "off"
        self.ready(
            f"policy={cfg.policy} serve={str(self.config.run.serve).lower()} wire_compression={self.wire_encoding} "
            f"shared_memory={shared}"
        )
        if not self.config.run.serve:
            return self._one_acquisition()
        self.log.info("standing deployment %s: idle, waiting for `framepipe acquire`", self.run_id)
        code = 0
        while not self._shutdown and not self.stopping:
            self._serve(timeout_ms=100)
            if self._pending_acquire is not None:
                self._start_pending()
            self.stream.heartbeat(cfg.heartbeat_s)
        reason = "shutdown" if self._shutdown else "stopped"
        self.book.phase = Phase.SHUTTING_DOWN
        self.log.info("%s: ending the deployment", reason)
        self.stream.finish(STOP_GRACE_S if self.stopping else self.config.run.finish_timeout_s, reason=reason)
        self._answer_waiting()
        return code

    def _one_acquisition(self) -> int:
        """``run.serve = false``: wait for the subscribers, take ``camera.count`` frames, end."""
        self.stream.wait_for_subscribers(self.config.publisher.sync_timeout_s)
        self.log.info("all subscribers here: publishing")
        camera, self.camera = self.camera, None  # the camera opened at set-up, as configured
        assert camera is not None
        code = self._acquire(self.config.run.name, self.config.camera.count, camera, stays_up=False)
        summary = self.book.last()
        if code == 0 and summary is not None and summary["reason"].startswith("camera error"):
            code = 2
        return code

    def _serve(self, timeout_ms: int) -> None:
        """One round of the idle loop: sync requests (hello, bye) and control requests."""
        events = self.stream.poll(extra=(self.control.sock,), timeout_ms=timeout_ms)
        self.stream.service(events)
        self._take_reports()
        if events.get(self.control.sock):
            self._control(events)

    # ------------------------------------------------------------------ control requests
    def _control(self, events: dict[Any, int]) -> None:
        """Answer what waits on the control endpoint (never blocks on the camera for long)."""
        while self.control.sock.poll(0):
            try:
                received = self.control.receive()
            except ProtocolError as e:
                self.reject(e, "acquisition-control")
                continue
            peer, asked = received.identity, received.message
            request = asked.control
            changes_state = isinstance(request, Acquire) or (
                isinstance(request, Command) and request.action in ("stop", "shutdown")
            )
            refusal = self.trust.may(received.peer, "control") if changes_state else None
            if refusal is not None:
                # logged with the key and the role it has, or the address without CURVE
                self.reject(ProtocolError(f"{asked.kind} refused: {refusal}", kind="forbidden"), "acquisition-control")
                self.control.refuse(peer, refusal)
                continue
            if isinstance(request, Acquire):
                self._on_acquire(peer, request)
            elif isinstance(request, Command):
                self._on_command(peer, request)
            else:
                self.reject(ProtocolError(f"unexpected {asked.kind} request", kind="bad_kind"), "acquisition-control")
                self.control.refuse(peer, f"unexpected {asked.kind}: send acquire or a command")

    def _state(self, **extra: Any) -> AcquisitionState:
        acq = self.book.current
        extra.setdefault("acquisition", acq.progress() if acq is not None else None)
        return AcquisitionState(
            state=self.book.phase.value,
            history=[{k: s[k] for k in ("id", "name", "published", "reason", "complete")} for s in self.book.finished],
            **extra,
        )

    def _on_acquire(self, peer: bytes, request: Acquire) -> None:
        if self.book.phase is not Phase.IDLE or self._pending_acquire is not None:
            acq = self.book.current
            busy = f" (acquisition {acq.id} '{acq.name}')" if acq is not None else ""
            self.control.refuse(peer, f"busy: {self.book.phase}{busy}")
            return
        if self._shutdown:
            self.control.refuse(peer, "shutting down")
            return
        missing = self.stream.missing_subscribers() or (["subscriptions"] if not self.stream.all_here() else [])
        if missing:
            self.control.refuse(
                peer, f"a component is missing: {', '.join(missing)} (not connected to the frames stream)"
            )
            return
        try:
            self.config.camera.for_acquisition(request.frames, request.camera)
        except ConfigError as e:
            self.control.refuse(peer, str(e))
            return
        name = request.acquisition_name or self.config.run.name
        self._pending_acquire = (peer, name, request.frames, dict(request.camera or {}))

    def _on_command(self, peer: bytes, command: Command) -> None:
        action = command.action
        if action == "state":
            self.control.reply(peer, self._state())
        elif action == "stop":
            if self.book.phase is Phase.ACQUIRING:
                self._stop_acquisition = True
                self.log.info("stop asked by %s: the camera stops, what it took drains", command.name)
            self.control.reply(peer, self._state())
        elif action == "shutdown":
            self.log.info("shutdown asked by %s", command.name)
            self._shutdown = True
            self._stop_acquisition = True
            self.control.reply(peer, self._state())
        elif action == "wait":
            wanted = command.acquisition
            if wanted is None and self.book.current is not None:
                wanted = self.book.current.id
            summary = self.book.last(wanted)
            if summary is not None:
                self.control.reply(peer, self._state(summary=summary))
            elif self.book.current is not None and self.book.current.id == wanted:
                self._waiting.append((peer, wanted))  # answered when it is accounted for
            else:
                self.control.refuse(peer, f"no acquisition {wanted} in this deployment's history")
        elif action == "snap":
            self._snap(peer)

    def _snap(self, peer: bytes) -> None:
        """The newest frame while acquiring, or one grabbed now when idle."""
        frame = self.latest if self.book.phase is not Phase.IDLE else None
        if frame is None:
            try:
                frame = self._grab_one()
            except (CameraError, ConfigError) as e:
                self.control.refuse(peer, f"snap: {e}")
                return
        if frame is None:
            self.control.refuse(peer, "snap: the camera gave no frame")
            return
        header = data_header(
            "frame",
            frame.array,
            frame_id=frame.frame_id,
            seq=0,
            t_acq_ns=frame.t_acq_ns,
            t_server_ns=time.time_ns(),
            **frame.extra,
        )
        self.control.sock.send_multipart([peer, b"", *encode_data(header, frame.pixels())], copy=False)

    def _grab_one(self) -> Frame | None:
        camera = self._open_camera(self.config.camera.for_acquisition(1))
        try:
            return camera.grab(self.config.camera.grab_timeout_s)
        finally:
            camera.close()

    def _answer_waiting(self) -> None:
        for peer, wanted in list(self._waiting):
            summary = self.book.last(wanted)
            if summary is not None:
                self.control.reply(peer, self._state(summary=summary))
                self._waiting.remove((peer, wanted))
            elif self.book.phase is Phase.SHUTTING_DOWN:
                self.control.refuse(peer, "shutting down before the acquisition was accounted for")
                self._waiting.remove((peer, wanted))

    def _take_reports(self) -> None:
        """Byes that came in: each is a component's report on its acquisition."""
        for bye in self.stream.reports:
            counts = bye.model_dump(exclude_none=True, exclude={"v", "kind", "name", "t_send_ns", "acquisition"})
            self.book.report(bye.name, bye.acquisition, counts)
        self.stream.reports.clear()

    # ------------------------------------------------------------------ acquisitions
    #: an accepted acquire, started by the idle loop: (peer, name, frames, camera overrides)
    _pending_acquire: tuple[bytes, str, int, dict[str, Any]] | None = None

    def _open_camera(self, cfg: CameraConfig) -> Camera:
        """The camera for one acquisition (or a snap): the one opened at set-up if it still
        fits, else a new one (the acquisition's overrides and frame count)."""
        if self.camera is not None:
            # the set-up camera is released first: some cameras open in one process at a time
            self.camera.close()
            self.camera = None
        if self._camera is not None:
            camera, self._camera = self._camera, None  # a camera given by the caller serves once
        else:
            camera = open_camera(cfg)
        camera.chunks_wanted = self.wire_encoding == "bitshuffle-lz4"
        camera.open()
        return camera

    def _acquire(
        self, name: str, frames: int, camera: Camera, *, stays_up: bool, overrides: dict[str, Any] | None = None
    ) -> int:
        """One acquisition with an opened ``camera``, start to summary (closes the camera).
        Returns 0, or 2 for a camera that failed."""
        cfg = self.config.camera.for_acquisition(frames, overrides)
        acq = self.book.begin(name, frames, settings_of(cfg))
        self._stop_acquisition = False
        start = AcquisitionStart(
            acquisition=acq.id,
            name=name,
            run=self.config.run.name,
            run_id=self.run_id,
            frames=frames,
            settings=acq.settings,
            camera=camera.metadata(),
            t_start_ns=time.time_ns(),
        )
        self.log.info("acquisition %d '%s' starts: %s frames", acq.id, name, frames or "until stopped")
        code = 0
        reason = "complete"
        published_before = self.counters[Count.PUBLISHED]
        try:
            if self.stream.start(start):
                reason, code = self._publish(camera)
            else:
                reason = "stopped"
        finally:
            self.counters[Count.CAMERA_LOST] += camera.frames_lost
            camera_lost = camera.frames_lost
            camera.close()
        published = self.counters[Count.PUBLISHED] - published_before
        self.counters[Count.ACQUISITIONS] += 1
        self.counters[Count.BLOCKED_MS] = int(self.stream.blocked_s * 1000)
        self.log.info("acquisition %d: end of stream (%s) after %d frames", acq.id, reason, published)
        owed = [n for n in self.stream.expected if n in self.stream.hellos]
        if "ventilator" in owed:
            owed.append("sink")  # the sink reports the work stream and its results recorders
        self.book.end(
            reason,
            published=published,
            camera_lost=camera_lost,
            owed=owed,
            timeout_s=STOP_GRACE_S if self.stopping else self.config.run.finish_timeout_s,
        )
        timeout = STOP_GRACE_S if self.stopping else self.config.run.finish_timeout_s
        # frames the camera itself lost (gaps in its frame ids): the recorders' ledgers say so
        self.stream.finish(
            timeout,
            reason=reason,
            camera_lost=camera_lost,
            stays_up=stays_up,
            extra=(self.control.sock,),
            on_extra=self._control,
        )
        while not self.book.may_close():
            self._serve(timeout_ms=100)
        summary = self.book.close()
        for problem in summary["problems"]:
            self.log.warning("acquisition %d: %s", acq.id, problem)
        self.log.info(
            "acquisition %d '%s' accounted for: %d frames, %s",
            acq.id,
            name,
            published,
            "complete" if summary["complete"] else "NOT complete",
        )
        self._answer_waiting()
        return code

    def _publish(self, camera: Camera) -> tuple[str, int]:
        """Grab and publish until the camera ends, a stop, or an error: (reason, code)."""
        stream = self.stream
        grab_timeout = self.config.camera.grab_timeout_s
        reason, code = "complete", 0
        between = zmq.Poller()  # made once: Socket.poll() makes a poller per call, per frame
        for sock in (*stream.sockets(), self.control.sock):
            between.register(sock, zmq.POLLIN)
        acq = self.book.current
        assert acq is not None
        try:
            while not self.stopping and not self._stop_acquisition:
                frame = camera.grab(grab_timeout)
                if frame is None:
                    break
                self.counters[Count.ACQUIRED] += 1
                if self.counters[Count.ACQUIRED] == 1:
                    self.counters[Count.FIRST_NS] = time.time_ns()
                header = data_header(
                    "frame",
                    frame.array,
                    frame_id=frame.frame_id,
                    seq=stream.seq,
                    t_acq_ns=frame.t_acq_ns,
                    t_pub_ns=time.time_ns(),
                    acquisition=acq.id,
                    **frame.extra,
                )
                if not self._send_frame(header, frame):
                    break
                self.latest = frame
                acq.published += 1
                self.counters[Count.PUBLISHED] += 1
                self.counters[Count.BYTES] += frame.array.nbytes
                if stream.pixels_sent is not None:
                    self.counters[Count.PIXEL_BYTES] += frame.array.nbytes
                    self.counters[Count.WIRE_BYTES] += memoryview(stream.pixels_sent[1]).nbytes
                self.counters[Count.LAST_NS] = time.time_ns()
                # between frames: subscription changes, late hellos, control, without waiting
                if between.poll(0):
                    self._serve(timeout_ms=0)
                stream.heartbeat(self.config.publisher.heartbeat_s)  # a slow camera still looks alive
        except CameraError as e:
            self.log.error("camera failed after %d frames: %s", acq.published, e)
            reason, code = f"camera error: {one_line(str(e))}", 2
        if code == 0 and (self.stopping or self._stop_acquisition):
            reason = "stopped"
        return reason, code

    def _send_frame(self, header: dict[str, Any], frame: Frame) -> bool:
        """One frame on the stream: into the ring for same-host readers (the chunk, when
        frames are compressed: made once, here, for every reader and every hop), and on
        the socket for the others."""
        stream = self.stream
        if stream.on_ring and self.wire_encoding == bitshuffle.NAME:
            parts = self._frame_parts(header, frame)
            chunk = np.frombuffer(parts[1], np.uint8)
            in_ring = {**header, "encoding": bitshuffle.NAME, "encoded_bytes": chunk.nbytes}
            return stream.publish(parts, frame.frame_id, chunk, in_ring)
        return stream.publish(partial(self._frame_parts, header, frame), frame.frame_id, frame.array, header)

    @property
    def wire_encoding(self) -> str:
        return self.config.publisher.wire_encoding()

    def _frame_parts(self, header: dict[str, Any], frame: Frame) -> list[Any]:
        """The frame's message, encoded as the wire wants it: compressed once, here; a
        chunk the camera already holds (replay) is sent as it is."""
        if frame.chunk is not None:
            if self.wire_encoding == "bitshuffle-lz4":
                return encode_chunk(header, frame.chunk)
            return encode_data(header, frame.pixels())
        return encode_data(header, frame.array, encoding=self.wire_encoding)

    def _start_pending(self) -> None:
        """An accepted acquire: answer with its id, then run it (the loop serves meanwhile)."""
        pending, self._pending_acquire = self._pending_acquire, None
        if pending is None:
            return
        peer, name, frames, overrides = pending
        try:
            camera = self._open_camera(self.config.camera.for_acquisition(frames, overrides))
        except (CameraError, ConfigError) as e:
            # the camera refused these settings (its own range): refused, and still idle
            self.log.warning("acquire refused: %s", one_line(str(e)))
            self.control.refuse(peer, str(e))
            return
        self.control.reply(
            peer, self._state(acquisition={"id": self.book.next_id, "name": name, "frames": frames, "published": 0})
        )
        self._acquire(name, frames, camera, stays_up=True, overrides=overrides)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out[Count.WIRE_ENCODING] = self.wire_encoding
        if self.counters[Count.WIRE_BYTES]:
            out[Count.WIRE_RATIO] = round(self.counters[Count.PIXEL_BYTES] / self.counters[Count.WIRE_BYTES], 3)
        if self.set_up:  # live figures for the dashboard, while it runs
            out[Count.BLOCKED_MS] = int(self.stream.blocked_s * 1000)
            out[Count.SUBSCRIBERS] = sorted(self.stream.hellos)
            out[Count.TRANSPORT] = self.stream.transport()
            if self.stream.ring is not None:
                out[Count.RING] = {
                    "name": self.stream.ring.name,
                    "slots": self.stream.ring.slots,
                    "slot_mb": round(self.stream.ring.slot_bytes / 1e6, 2),
                    "in_use": self.stream.ring.in_use(),
                    "drops": self.stream.ring_drops,
                }
            out["phase"] = self.book.phase.value
            acq = self.book.current
            if acq is not None:
                out["acquisition"] = acq.progress()
            last = self.book.last()
            if last is not None:
                out["last_acquisition"] = {k: last[k] for k in ("id", "name", "published", "reason", "complete")}
        return out

    def status_parts(self) -> StatusParts:
        return StatusParts(peers=StreamPeers.of(self.stream), queue=Queue())
