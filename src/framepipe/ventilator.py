"""The ventilator: fans frames out to the worker pool, and makes sure each one comes back.

PUSH/PULL alone loses whatever was queued to a worker that dies. The ventilator keeps
every frame it sent until the sink acknowledges it (acks arrive on the sink's control
stream), re-sends frames not acknowledged within ``redispatch_after_s``, and stops
taking new frames while ``window`` frames are in flight. The sink drops duplicates, so a
lost ack or a late result from a hung worker costs a duplicate, never a frame. Those
decisions are :class:`framepipe.core.dispatch.InFlightWindow`'s; this module is the loop
that feeds it the source, the acks and the socket monitor, and sends what it names.

A worker that dies (SIGKILL, crash, network gone) or hangs (SIGSTOP: no answer to
ZMTP heartbeats within ``sink.worker_timeout_s``) drops its connection; the ventilator
sees that on a socket monitor and re-dispatches at once every frame sent before then and
not yet acknowledged, rather than waiting for the deadline. PUSH does not say which
worker held which frame, so some of those are duplicates the sink drops: at most one
window per failure, the price of not waiting.

On one host (``transport.shared_memory``), the frames come from the publisher's ring as
descriptors: the ventilator holds each frame's slot until the frame is acknowledged (so a
re-dispatch still finds it), and a second PUSH socket, on an abstract unix socket only
this host's network namespace sees (``local_tasks_url``), hands the descriptors to the
workers there; a worker on another host gets the pixels by TCP.

Memory: at most ``window`` frames are held (frames × frame size), plus the PUSH
high-water marks (``hwm_frames`` per connected worker) — both sized in frames.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from framepipe.cameras import Camera, open_camera
from framepipe.config import Config
from framepipe.core.counters import Count
from framepipe.core.dispatch import InFlightWindow
from framepipe.core.errors import CameraError, ProtocolError, SyncError
from framepipe.core.series import UPSTREAM_LOST
from framepipe.runtime.component import Component
from framepipe.runtime.status import Queue, StartSync, StatusParts
from framepipe.wire.messages import (
    Ack,
    AcquisitionStart,
    Done,
    EndOfStream,
    ErrorReply,
    Welcome,
    WorkersAlive,
)
from framepipe.wire.protocol import (
    TOPIC_ACK,
    TOPIC_WORKERS,
    data_header,
    decode,
    encode_data,
    encode_forward,
    encode_slot,
    from_ranges,
)
from framepipe.wire.sockets import POLL_MS
from framepipe.wire.subscription import Subscription
from framepipe.wire.sync import exchange

#: ZMTP heartbeat interval on the tasks socket: a hung worker's connection is closed
#: after ``sink.worker_timeout_s`` without an answer, and its frames handed back
HEARTBEAT_IVL_MS = 1000
#: on SIGINT/SIGTERM: time for in-flight frames to come back, then for the sink to
#: confirm the end of stream. With a 1 s socket linger the ventilator exits within 5 s.
STOP_DRAIN_S = 1.5
#: at start, how long to wait for the workers the sink knows to connect to the tasks socket
CONNECT_WAIT_S = 2.0
STOP_EOS_S = 1.5


class Ventilator(Component):
    """Frames in (SUB to the publisher, or a camera) → PUSH to workers, exactly once."""

    role = "ventilator"

    def __init__(self, config: Config, camera: Camera | None = None, name: str | None = None):
        super().__init__(config, name)
        self._camera = camera
        cfg = config.ventilator
        #: frame parts are [header, payload]; the header gets the attempt number when sent
        self.window: InFlightWindow[list[Any]] = InFlightWindow(cfg.window, cfg.redispatch_after_s, time.monotonic)
        #: the acquisition being dispatched (its start message), and the token its tasks
        #: carry: the sink takes results only with it, so a forger must have seen a task
        self.acquisition: AcquisitionStart | None = None
        self.token = ""
        #: the publisher's end of the acquisition: what the camera produced
        self.source_eos: EndOfStream | None = None
        #: the sink instance that knows the acquisition (a restarted one is told again)
        self.sink_instance: str | None = None
        #: the source's (received, gaps) when this acquisition began: its bye counts its own
        self._seq_at_start = (0, 0)
        self._upstream_lost = False

    def setup(self) -> None:
        cfg = self.config.ventilator
        sink = self.config.sink
        self.push = self.socket(zmq.PUSH, sndhwm=cfg.hwm_frames)
        self.push.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        self.push.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(sink.worker_timeout_s * 1000))
        self.bind(self.push, cfg.bind_url(cfg.tasks_port), "tasks")
        self.monitor = self.push.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self._sockets.insert(0, self.monitor)  # closed (with the monitor off) before the rest
        #: same-host workers' tasks (descriptors of ring frames): None without shared memory
        self.local: zmq.Socket[Any] | None = None
        self.local_monitor: zmq.Socket[Any] | None = None
        if self.config.transport.shared_memory:
            # no ZMTP heartbeat timeout here: libzmq 4.3.5 aborts a worker whose ipc
            # connection was closed that way while it was stopped with a full queue
            # (stream_engine_base.cpp:310, !_io_error, on SIGCONT). A hung worker is still
            # found: the sink stops hearing it and names it lost, and its frames are handed
            # back then (or at redispatch_after_s).
            self.local = self.socket(zmq.PUSH, sndhwm=cfg.hwm_frames)
            self.bind(self.local, self.config.local_tasks_url(), "tasks")
            self.local_monitor = self.local.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
            self._sockets.insert(0, self.local_monitor)
        self.control = self.socket(zmq.SUB, rcvhwm=10_000)
        for topic in (TOPIC_ACK, TOPIC_WORKERS):
            self.control.setsockopt(zmq.SUBSCRIBE, topic)
        self.connect(self.control, sink.connect_url(sink.control_port))
        #: frames from the publisher's stream, or (source = "camera") from a camera of our own
        self.source: Subscription | None = None
        self.camera: Camera | None = None
        if cfg.source == "publisher":
            pub = self.config.publisher
            self.source = Subscription(
                self,
                stream="frames",
                pub_url=pub.connect_url(pub.frames_port),
                sync_url=pub.connect_url(pub.sync_port),
                hwm=self.config.publisher.hwm_frames,
                shared_memory=self.config.transport.shared_memory,
            )
        else:
            camera = self._camera or open_camera(self.config.camera)
            try:
                camera.open()
            except BaseException:
                self.push.disable_monitor()  # setup() did not finish, so teardown() will not run
                raise
            self.camera = camera

    def teardown(self) -> None:
        if not self.push.closed:
            self.push.disable_monitor()
        if self.local is not None and not self.local.closed:
            self.local.disable_monitor()
        if self.source is not None:
            self.source.close()
        if self.camera is not None:
            self.camera.close()

    def run(self) -> int:
        self.open()
        self.ready(f"window={self.config.ventilator.window}")
        welcome = self._wait_for_sink()
        known = welcome.workers or []
        self.log.info("sink ready with workers: %s", ", ".join(known) or "?")
        self._wait_for_connections(max(1, len(known)))
        if self.source is None:
            assert self.camera is not None
            # the ventilator is the source: one acquisition, named after the run
            cam = self.config.camera
            self._begin(
                AcquisitionStart(
                    acquisition=1,
                    name=self.config.run.name,
                    run=self.config.run.name,
                    run_id=self.config.run.id or "run",
                    frames=cam.count,
                    settings={"kind": cam.kind, "width": cam.width, "height": cam.height},
                    camera=self.camera.metadata(),
                    t_start_ns=time.time_ns(),
                )
            )
            return self._loop(self.camera)
        self.source.hello(self.config.publisher.sync_timeout_s)
        if self.source.acquisition is not None:
            self._begin(self.source.acquisition)  # joined one under way (a restart)
        code = 0
        while True:
            # standing: an acquisition's outcome is in its summary, not in this process's exit
            # code (a non-zero exit at shutdown would have the supervisor start it again)
            code = self._loop(None) if self.config.run.serve else (self._loop(None) or code)
            eos = self.source_eos
            if self._upstream_lost and self.config.run.serve and not self.stopping:
                self._upstream_lost = False  # wait for the publisher to come back
                continue
            if eos is None or not eos.stays_up or self.stopping:
                return code or (1 if self._upstream_lost else 0)
            self.source_eos = None

    def _begin(self, start: AcquisitionStart) -> None:
        """An acquisition starts: the sink hears of it (and says when it is ready), then
        its frames are dispatched, exactly once within it."""
        self.window.begin_acquisition()
        self.acquisition = start
        self.token = secrets.token_hex(16)
        self.log.info("acquisition %d '%s': dispatching", start.acquisition, start.name)
        self._wait_for_sink(start)

    def _acquisition_fields(self) -> dict[str, Any]:
        return {} if self.acquisition is None else self.acquisition.model_dump(exclude_none=True, exclude={"v", "kind"})

    def _wait_for_sink(self, start: AcquisitionStart | None = None) -> Welcome:
        """Ask the sink until it has a worker and its results subscribers; bounded.

        The sink answers at once, a welcome or a refusal saying what it still waits for,
        so that a timeout names the reason: no sink at all, or the sink's missing pieces.
        """
        assert self.ctx is not None
        sink, timeout = self.config.sink, self.config.ventilator.sync_timeout_s
        url = sink.connect_url(sink.sync_port)
        deadline = time.monotonic() + timeout
        refused: str | None = None
        self.log.info("waiting for the sink and a worker")
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise SyncError("timed out")
                fields: dict[str, Any] = {}
                if start is not None:
                    fields = {"acquisition": self._acquisition_fields(), "token": self.token}
                reply = exchange(
                    self.ctx, url, "hello", self.name, timeout_s=left, should_stop=lambda: self.stopping, **fields
                )
            except SyncError as e:
                if self.stopping:
                    raise
                if refused is None:
                    raise SyncError(f"no answer from the sink at {url} within {timeout:g} s: is it running?") from e
                raise SyncError(f"the sink at {url} was not ready within {timeout:g} s: still {refused}") from e
            answer = reply.reply.control
            if isinstance(answer, Welcome):
                if answer.instance is not None:
                    self.sink_instance = answer.instance
                return answer
            reason = answer.reason if isinstance(answer, ErrorReply) else f"unexpected {reply.reply.kind}"
            if reason != refused:
                refused = reason
                self.log.info("sink is %s", refused)
            # ask again when the sink publishes its next worker status (every 0.5 s)
            if self.control.poll(1000):
                self._read_control()

    def _wait_for_connections(self, count: int) -> None:
        """Give the workers the sink knows a moment to connect here too, so the first
        frames are spread over all of them rather than all sent to the first to arrive.
        Bounded: workers that come later simply join the round-robin."""
        deadline = time.monotonic() + CONNECT_WAIT_S
        while self.window.counters[Count.WORKER_CONNECTIONS] < count and not self.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for monitor in (self.monitor, self.local_monitor):
                if monitor is not None and monitor.poll(int(min(left, 0.05) * 1000) + 1):
                    self._read_monitor(monitor)

    # ---------------------------------------------------------------- main loop
    def _loop(self, camera: Camera | None) -> int:
        """One acquisition (or, idle, until the next one starts): returns its exit code."""
        source_done = False
        code = 0
        stop_deadline: float | None = None
        while True:
            if self.stopping and stop_deadline is None:
                # stop taking new frames; give in-flight work a bounded time to finish
                stop_deadline = time.monotonic() + min(STOP_DRAIN_S, self.config.run.finish_timeout_s)
                source_done = True
                self.log.info("stopping: %d frame(s) in flight", len(self.window.in_flight))
            if source_done and self.window.all_acknowledged:
                break
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                self.log.warning("stopped with %d frame(s) unacknowledged", len(self.window.in_flight))
                break
            room = self.window.has_room and not source_done
            poller = zmq.Poller()
            poller.register(self.control, zmq.POLLIN)
            poller.register(self.monitor, zmq.POLLIN)
            if self.local_monitor is not None:
                poller.register(self.local_monitor, zmq.POLLIN)
            if self.window.queue:
                poller.register(self.push, zmq.POLLOUT)
                if self.local is not None:
                    poller.register(self.local, zmq.POLLOUT)
            if room and self.source is not None:
                poller.register(self.source.sub, zmq.POLLIN)
            timeout = 0 if (room and camera is not None) else POLL_MS
            events = dict(poller.poll(timeout))
            if events.get(self.control):
                self._read_control()
            if events.get(self.monitor):
                self._read_monitor(self.monitor)
            if self.local_monitor is not None and events.get(self.local_monitor):
                self._read_monitor(self.local_monitor)
            if (
                not source_done
                and self.source is not None
                and self.acquisition is not None
                and time.monotonic() - self.source.last_heard > self.config.limits.upstream_timeout_s
            ):
                self.log.error(
                    "no message from the publisher for %.0f s: acquisition %d ends as %s",
                    time.monotonic() - self.source.last_heard,
                    self.acquisition.acquisition,
                    UPSTREAM_LOST,
                )
                source_done = True
                self.source_eos = None
                self._upstream_lost = True
            if room:
                if self.source is not None and events.get(self.source.sub):
                    source_done = self._take_from_stream()
                elif camera is not None:
                    try:
                        source_done = self._take_from_camera(camera)
                    except CameraError as e:
                        self.log.error("camera failed: %s", e)
                        source_done, code = True, 2
            self.window.redispatch_overdue()
            self._send_queued()
        return self._finish(code)

    def _accept(self, frame_id: int, parts: list[Any]) -> None:
        """Hold a frame until it is acknowledged: ``parts`` = [header, payload (for a frame
        in the publisher's ring: a view of its slot), the ring frame's message or None];
        a ring frame the window does not take is released at once."""
        if not self.window.accept(frame_id, parts):
            self.warn.warning("dup-source", "frame %d arrived twice from the source: ignored", frame_id)
            if parts[2] is not None and self.source is not None:
                self.source.release(parts[2])
            return
        if self.window.counters[Count.ACCEPTED] == 1:
            self.counters[Count.FIRST_NS] = time.time_ns()
        self.counters[Count.BYTES] += memoryview(parts[1]).nbytes

    def _take_from_stream(self) -> bool:
        assert self.source is not None
        for _ in range(self.config.ventilator.window):
            if not self.window.has_room:
                return False
            msg = self.source.receive()
            if msg is None:
                if self.source.upstream_restarted:
                    self.log.warning("the publisher restarted: saying hello again")
                    lost = self.acquisition is not None
                    if lost:
                        assert self.acquisition is not None
                        self.log.error("acquisition %d ends as %s", self.acquisition.acquisition, UPSTREAM_LOST)
                        self._upstream_lost, self.source_eos = True, None
                        self.source.acquisition = None
                    self.source.hello(self.config.publisher.sync_timeout_s)
                    return lost
                return False
            if isinstance(msg.control, AcquisitionStart):
                if self.window.in_flight or self.window.queue:
                    self.log.error("acquisition %d started before the last one ended", msg.control.acquisition)
                self._begin(msg.control)
                continue
            if isinstance(msg.control, EndOfStream):
                self.source_eos = msg.control
                if msg.control.acquisition is None:
                    self.acquisition = None  # the deployment ends, between acquisitions
                self.log.info(
                    "end of acquisition %s from the publisher (%s)", msg.control.acquisition, msg.control.reason
                )
                return True
            if self.acquisition is None or msg.header.get("acquisition") != self.acquisition.acquisition:
                self.counters[Count.STALE] += 1
                self.source.release(msg)
                continue
            if msg.ring_slot is not None:
                # the slot's pixels, or the publisher's chunk as it is (never decoded here)
                payload = msg.payload if msg.encoding is not None else msg.array
                self._accept(msg.frame_id, [msg.header, payload, msg])
            else:
                self._accept(msg.frame_id, [msg.header, msg.payload, None])
        return False

    def _take_from_camera(self, camera: Camera) -> bool:
        frame = camera.grab(self.config.camera.grab_timeout_s)
        if frame is None:
            return True
        header = data_header(
            "frame",
            frame.array,
            frame_id=frame.frame_id,
            seq=self.window.counters[Count.ACCEPTED],
            t_acq_ns=frame.t_acq_ns,
            t_pub_ns=time.time_ns(),
            acquisition=1,
            **frame.extra,
        )
        parts = encode_data(header, frame.array)
        self._accept(frame.frame_id, [header, parts[1], None])
        return False

    def _send_queued(self) -> None:
        """Send what the window names: to a same-host worker first (a ring frame as its
        descriptor), else to any worker by TCP with the pixels."""
        while (frame := self.window.next_to_send()) is not None:
            header, payload, msg = frame.parts
            header = {**header, "attempt": frame.attempts, "token": self.token}
            sent = False
            if self.local is not None:
                if msg is not None:
                    ring, slot, gen = msg.ring_slot
                    local = encode_slot({**header, "kind": "frame"}, ring, slot, gen)
                else:
                    local = encode_forward(header, payload)
                try:
                    self.local.send_multipart(local, copy=False, flags=zmq.NOBLOCK)
                    sent = True
                    self.counters[Count.TASKS_LOCAL] += 1
                except zmq.Again:
                    pass
            if not sent:
                if msg is not None:
                    header = {k: v for k, v in header.items() if k not in ("ring", "slot", "gen")}
                    header["kind"] = "frame"
                try:
                    self.push.send_multipart(encode_forward(header, payload), copy=False, flags=zmq.NOBLOCK)
                except zmq.Again:
                    return  # every worker is full (or none is connected): try again on POLLOUT
            self.window.sent(frame)

    def _read_monitor(self, monitor: zmq.Socket[Any]) -> None:
        """Worker connections come and go; when one goes, hand its frames back at once."""
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_ACCEPTED:
                self.window.worker_connected()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                n = self.window.worker_disconnected()
                self.log.info("a worker disconnected: %d unacknowledged frame(s) re-dispatched", n)

    def _read_control(self) -> None:
        while True:
            try:
                parts = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode(parts, max_payload_bytes=self.max_payload, topic=True)
                if parts[0] == TOPIC_ACK and isinstance(msg.control, Ack):
                    ids = from_ranges(msg.control.ids)
                    held = {i: f.parts[2] for i in ids if (f := self.window.in_flight.get(i)) and f.parts[2]}
                    if self.window.acknowledge(ids):
                        self.counters[Count.LAST_NS] = time.time_ns()
                    if held and self.source is not None:
                        for frame_id, ring_msg in held.items():
                            if frame_id not in self.window.in_flight:
                                self.source.release(ring_msg)
                elif parts[0] == TOPIC_WORKERS and isinstance(msg.control, WorkersAlive):
                    self._workers_changed(msg.control.alive)
                    self._sink_seen(msg.control.instance)
            except ProtocolError as e:
                self.reject(e, "control")

    def _sink_seen(self, instance: str | None) -> None:
        """A sink instance we did not tell about the acquisition (it restarted): tell it."""
        if instance is None or instance == self.sink_instance:
            return
        if self.sink_instance is not None and self.acquisition is not None:
            self.log.warning("the sink restarted: telling it acquisition %d again", self.acquisition.acquisition)
            self.sink_instance = instance
            self._wait_for_sink(self.acquisition)
        else:
            self.sink_instance = instance

    def _workers_changed(self, alive: list[str]) -> None:
        joined, left = self.window.workers_changed(alive)
        for w in joined:
            self.log.info("worker %s joined", w)
        for w in left:
            self.log.warning("worker %s lost: its unacknowledged frames will be re-dispatched", w)

    def _finish(self, code: int) -> int:
        sink = self.config.sink
        assert self.ctx is not None
        eos = self.window.end_of_stream()
        counts = self.window.counters
        self.log.info(
            "done: %d accepted, %d re-dispatched, %d unacknowledged",
            counts["accepted"],
            counts["redispatched"],
            counts["unacknowledged"],
        )
        if self.window.ignored_acks:
            self.log.debug("%d acknowledgement(s) for frames not in flight ignored", self.window.ignored_acks)
        source = self.source_eos
        fields: dict[str, Any] = {}
        if self.acquisition is not None:
            fields["acquisition"] = self._acquisition_fields()
        if source is not None:
            # the reference: what the camera produced, by the publisher's end of stream
            fields.update(source_ids=source.frame_ids or [], reason=source.reason, stays_up=source.stays_up)
        elif self.source is not None:
            fields["reason"] = UPSTREAM_LOST if self._upstream_lost else "stopped"
            # a standing deployment goes on (the next acquisition, once the publisher is back)
            fields["stays_up"] = True if (self.config.run.serve and not self.stopping) else None
        try:
            reply = exchange(
                self.ctx,
                sink.connect_url(sink.sync_port),
                "eos",
                self.name,
                timeout_s=self.config.run.finish_timeout_s if not self.stopping else STOP_EOS_S,
                frame_ids=eos.accepted,
                unacknowledged=eos.unacknowledged,
                **fields,
            )
            done = reply.reply.control
            if not isinstance(done, Done):
                why = done.reason if isinstance(done, ErrorReply) else f"unexpected {reply.reply.kind}"
                raise SyncError(f"the sink refused the end of stream: {why}")
            self.log.info("sink confirmed end of stream: %s received, %s missing", done.received, done.missing)
        except SyncError as e:
            if self.source is not None:
                self.source.release_all()
            self._bye()
            if self.stopping:
                # asked to stop: the unacknowledged frames are counted in the summary
                self.log.warning("sink did not confirm end of stream: %s", e)
                return code
            self.log.error("sink did not confirm end of stream: %s", e)
            return code or 1
        if self.source is not None:
            self.source.release_all()  # the acquisition is over: no slot of it is needed
        self._bye()
        if self.acquisition is not None:
            self.counters[Count.ACQUISITIONS] += 1
        self.acquisition = None
        if not self.window.all_acknowledged and not self.stopping:
            return code or 1
        return code

    def _bye(self) -> None:
        """Tell the publisher this acquisition is dispatched and accounted for by the sink."""
        if self.source is None or self.source_eos is None:
            return
        seq = self.source.sequence
        self.source.bye(5.0, received=seq.received, gaps=seq.gaps, acquisition=self.source_eos.acquisition)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(self.window.counters)
        if self.set_up and self.source is not None:
            out[Count.SOURCE_GAPS] = self.source.sequence.gaps
            out[Count.TRANSPORT] = self.source.transport
        # live figures for the dashboard
        window = self.window
        out[Count.IN_FLIGHT] = len(window.in_flight)
        out[Count.QUEUED] = len(window.queue)
        out[Count.WORKERS_ALIVE] = len(window.workers)
        out[Count.WINDOW] = self.config.ventilator.window
        return out

    def status_parts(self) -> StatusParts:
        window = self.window
        return StatusParts(
            queue=Queue(in_flight=len(window.in_flight), waiting=len(window.queue)),
            workers=dict.fromkeys(window.workers),
            sync=StartSync.of(self.source.welcome) if self.source is not None else None,
        )
