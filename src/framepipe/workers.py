"""Workers: PULL frames from the ventilator, run the configured processor (or chain) on each,
PUSH its outputs to the sink (docs/processors.md).

The processor is loaded and its parameters checked when the worker is made (an error is
exit 2 before any socket); it is set up with the first frame's shape and dtype (again if an
acquisition's frames differ), and a failed setup stops the worker, exit 2. A frame the
processor raises on, or whose outputs differ from the declared ones, is sent as a failed
result (the exception's one line): the sink lists it as failed, the worker goes on.

A worker connects (it owns no port), so workers on any machine can come and go. It
sends a heartbeat to the sink every ``heartbeat_s`` so a dead or hung worker is noticed
by name, and stops on the sink's ``stop`` control message or on SIGINT/SIGTERM.
Frames queued in a worker that dies are not lost: the ventilator re-sends them.
"""

from __future__ import annotations

import os
import socket as pysocket
import time
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from framepipe.config import Config
from framepipe.core.counters import Count
from framepipe.core.errors import ProtocolError
from framepipe.processing.chain import Chain, FrameFailure
from framepipe.processing.interface import FrameInfo
from framepipe.runtime.component import Component
from framepipe.runtime.status import Queue, StatusParts
from framepipe.wire.frames import FrameBuffers, frame_array
from framepipe.wire.messages import Heartbeat, Stop, WorkersAlive
from framepipe.wire.protocol import (
    TOPIC_STOP,
    TOPIC_WORKERS,
    decode,
    encode_control,
    encode_result,
    result_header,
)
from framepipe.wire.result_ring import ResultRing, ResultSlot
from framepipe.wire.ring import RingReader
from framepipe.wire.sockets import POLL_MS

#: how long a worker's own pings to the ventilator may go unanswered (ms): effectively
#: never; a dead ventilator closes the TCP connection, a hung one is waited for
WORKER_PATIENCE_MS = 3_600_000


def worker_name(index: int | None = None, host: str | None = None) -> str:
    """host-pid, unique across a LAN deployment; index for pools (-n)."""
    base = f"worker-{host or pysocket.gethostname()}-{os.getpid()}"
    return base if index is None else f"{base}-{index}"


class Worker(Component):
    """PULL frames → processor → PUSH results."""

    role = "worker"

    def __init__(self, config: Config, name: str | None = None):
        super().__init__(config, name or worker_name())
        self._sink_stop = False  # the sink said stop (a signal sets self.stopping instead)
        cfg = config.workers
        # ConfigError/ProcessorError (exit 2) here, before any socket is made
        self.chain = Chain.build(cfg.processor, cfg.params, default_result=cfg.result)
        fft = next((step for step in self.chain.steps if step.spec == "fft"), None)
        #: the FFT representation, for the viewer (results of another processor have none)
        self.representation: str | None = getattr(fft.params, "result", None) if fft is not None else None
        self._frame_buffers = FrameBuffers()
        #: how tasks reach this worker: "tcp", or "shared memory" once on the ventilator's host
        self.transport = "tcp"

    def setup(self) -> None:
        cfg = self.config.workers
        vent, sink = self.config.ventilator, self.config.sink
        self.pull = self.socket(zmq.PULL, rcvhwm=cfg.hwm_frames)
        # The ventilator closes a connection that stays silent past sink.worker_timeout_s
        # (a hung worker) and hands its frames to others. A busy worker with a full
        # receive queue stops reading, so it would not answer the ventilator's pings:
        # it pings on its own, from zmq's I/O thread, which only a hung process stops.
        self.pull.setsockopt(zmq.HEARTBEAT_IVL, int(cfg.heartbeat_s * 1000))
        # ...and never gives up on the ventilator itself: after a SIGCONT the frames it
        # still holds are processed (the sink drops them as duplicates) and it reconnects.
        self.pull.setsockopt(zmq.HEARTBEAT_TIMEOUT, WORKER_PATIENCE_MS)
        self.connect(self.pull, vent.connect_url(vent.tasks_port))
        #: same host as the ventilator (its abstract unix socket connects only there): tasks
        #: come as descriptors of the publisher's ring, read in place (wire/ring.py)
        self.rings = RingReader()
        self.local_url: str | None = None
        self.pull_monitor: zmq.Socket[Any] | None = None
        if self.config.transport.shared_memory:
            self.local_url = self.config.local_tasks_url()
            self.pull_monitor = self.pull.get_monitor_socket(zmq.EVENT_CONNECTED)
            self._sockets.insert(0, self.pull_monitor)
            self.connect(self.pull, self.local_url)
        self.push = self.socket(zmq.PUSH, sndhwm=max(cfg.hwm_frames, 2))
        self.connect(self.push, sink.connect_url(sink.results_in_port))
        self.control = self.socket(zmq.SUB)
        self.control.setsockopt(zmq.SUBSCRIBE, TOPIC_STOP)
        #: results into our own ring when the sink is on this host (its workers list says
        #: where it runs): the sink and its same-host subscribers read them in place
        transport = self.config.transport
        self.results = (
            ResultRing(self, sink.subscribers, self.config.run.name, slots=transport.result_ring_frames)
            if transport.shared_memory
            else None
        )
        if self.results is not None:
            self.control.setsockopt(zmq.SUBSCRIBE, TOPIC_WORKERS)
        self.connect(self.control, sink.connect_url(sink.control_port))

    def teardown(self) -> None:
        results: ResultRing | None = getattr(self, "results", None)
        if results is not None:
            results.close()
        rings: RingReader | None = getattr(self, "rings", None)
        if rings is not None:
            rings.close()

    def status_parts(self) -> StatusParts:
        return StatusParts(queue=Queue())

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out[Count.TRANSPORT] = self.transport
        return out

    def run(self) -> int:
        cfg = self.config.workers
        self.open()
        self.ready(f"processor={self.chain.describe()}")
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        if self.pull_monitor is not None:
            poller.register(self.pull_monitor, zmq.POLLIN)
        next_beat = 0.0
        while not self.stopping and not self._sink_stop:
            now = time.monotonic()
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + cfg.heartbeat_s
            events = dict(poller.poll(POLL_MS))
            if events.get(self.control) and self._stop_requested():
                self.log.info("stop from the sink")
                break
            if self.pull_monitor is not None and events.get(self.pull_monitor):
                self._local_connected(poller)
            if events.get(self.pull):
                self._process_one()
        self.log.info("processed %d frame(s), %d failed", self.counters[Count.PROCESSED], self.counters[Count.FAILED])
        for problem in self.chain.teardown():
            self.log.error("%s", problem)
        return 0

    def _local_connected(self, poller: zmq.Poller) -> None:
        """Connected to the ventilator on this host: its tasks come that way only (the TCP
        connection goes, so it never carries pixels this worker could read in place)."""
        assert self.pull_monitor is not None
        while True:
            try:
                event = recv_monitor_message(self.pull_monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_CONNECTED and event["endpoint"].decode() == self.local_url:
                vent = self.config.ventilator
                tcp = vent.connect_url(vent.tasks_port)
                try:
                    self.pull.disconnect(tcp)
                except zmq.ZMQError:
                    pass
                self.transport = "shared memory"
                self.log.info("tasks from the ventilator on this host: frames read from shared memory")
                poller.unregister(self.pull_monitor)
                self.pull.disable_monitor()
                return

    def _tasks_by_tcp(self, why: str) -> None:
        """The ventilator's socket on this host connects, but its rings cannot be read here
        (a container with its own /dev/shm on the host's network): take tasks by TCP from
        now on. The task not read is re-dispatched by the ventilator (never acknowledged)."""
        if self.local_url is None:
            return
        self.log.warning("the ventilator's frames are not readable here (%s): taking tasks by TCP", why)
        vent = self.config.ventilator
        try:
            self.pull.disconnect(self.local_url)
        except zmq.ZMQError:
            pass
        self.local_url = None
        self.connect(self.pull, vent.connect_url(vent.tasks_port))
        self.transport = "tcp"

    def _heartbeat(self) -> None:
        try:
            self.push.send_multipart(
                encode_control(Heartbeat(name=self.name, processed=self.counters[Count.PROCESSED])), flags=zmq.NOBLOCK
            )
        except zmq.Again:
            pass  # the sink is not there or is full: it will hear from us with the next result

    def _wait_for_stop(self, seconds: float) -> bool:
        """Wait up to ``seconds`` on the control socket; True if the sink said stop."""
        if self.control.poll(max(1, int(seconds * 1000))):
            if self._stop_requested():
                self._sink_stop = True
                return True
        return False

    def _stop_requested(self) -> bool:
        while True:
            try:
                parts = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            try:
                msg = decode(parts, max_payload_bytes=self.max_payload, topic=True)
            except ProtocolError as e:
                self.reject(e, "control")
                continue
            if isinstance(msg.control, Stop):
                return True
            if isinstance(msg.control, WorkersAlive) and self.results is not None:
                self.results.sink_seen(msg.control.host, msg.control.instance)

    def _abandon(self, claimed: ResultSlot | None) -> None:
        if self.results is not None:
            self.results.abandon(claimed)

    def _process_one(self) -> None:
        parts = self.pull.recv_multipart(copy=False)
        try:
            msg = decode(parts, max_payload_bytes=self.max_payload)
        except ProtocolError as e:
            self.reject(e, "tasks")
            return
        if msg.kind != "frame":
            self.reject(ProtocolError(f"unexpected {msg.kind} on tasks", kind="bad_kind"), "tasks")
            return
        try:
            if msg.ring_slot is not None:
                msg.in_ring(self.rings.read(msg.header))  # in place, in the publisher's ring
                self.counters[Count.FROM_RING] += 1
            # a compressed frame (on the wire, or the publisher's chunk in its ring) is
            # decompressed into a reused buffer; a raw one is used where it is
            frame = frame_array(msg, self._frame_buffers)
        except ProtocolError as e:
            self.reject(e, "tasks")
            if msg.ring_slot is not None and str(e).startswith("unknown ring"):
                self._tasks_by_tcp(str(e))
            return
        t0 = time.time_ns()
        h = msg.header
        fields: dict[str, Any] = {
            "t_start_ns": t0,
            "worker": self.name,
            "attempt": h.get("attempt", 0),
            "frame_shape": h["shape"],
            "frame_dtype": h["dtype"],
            # the sink takes a result only for a task of its acquisition, by its token
            **{k: h[k] for k in ("acquisition", "token") if k in h},
        }
        if self.representation is not None:
            fields["representation"] = self.representation
        info = FrameInfo.of(frame)
        if info != self.chain.frame_info:
            # ProcessorError (exit 2) out of run(): the worker stops, its frames go to others
            self.log.info("processor %s: set up for frames %s %s", self.chain.describe(), info.dtype, info.shape)
            self.chain.setup(info)
        # the sink on this host: the outputs are written straight into a slot of our ring
        claimed = self.results.claim(self.chain.schema, self._wait_for_stop) if self.results is not None else None
        cpu0 = time.thread_time_ns()
        try:
            arrays = self.chain.run(frame, out=claimed.views if claimed is not None else None)
            ids = {"frame_id": msg.frame_id, "seq": msg.seq, "t_acq_ns": h["t_acq_ns"], "t_done_ns": time.time_ns()}
            header = result_header(self.chain.schema, **ids, **fields)
        except FrameFailure as e:
            arrays = []
            self.counters[Count.FAILED] += 1
            self.warn.warning("failed", "frame %d failed: %s", msg.frame_id, e)
            ids = {"frame_id": msg.frame_id, "seq": msg.seq, "t_acq_ns": h["t_acq_ns"], "t_done_ns": time.time_ns()}
            header = result_header([], **ids, failed=str(e), **fields)
        self.counters[Count.PROCESSOR_CPU_NS] += time.thread_time_ns() - cpu0
        if msg.ring_slot is not None and not self.rings.ring(msg.ring_slot[0]).still(*msg.ring_slot[1:]):
            # the slot was reused while we computed: the frame was acknowledged already
            # (this was a duplicate), and what we read may be torn: no result from it
            self._abandon(claimed)
            self.reject(ProtocolError(f"frame {msg.frame_id}: its slot was reused", kind="stale_slot"), "tasks")
            return
        try:
            out = None
            if claimed is not None and arrays and header.get("failed") is None:
                assert self.results is not None
                out = self.results.put(header, arrays, claimed)
            else:
                self._abandon(claimed)  # no slot (by TCP), or nothing to put in it
            if out is None:
                out = encode_result(header, arrays)
        except ValueError as e:  # the chain checked the outputs: a bug here fails the frame, not the worker
            self.counters[Count.FAILED] += 1
            self.log.error("frame %d: result not sendable: %s", msg.frame_id, e)
            header = result_header([], **ids, failed=f"result not sendable: {e}", **fields)
            out = encode_result(header, [])
        # The sink may be full, or gone: keep listening for its stop (and for signals)
        # while waiting, rather than blocking on a send nobody will take. A result
        # abandoned here is not lost: the ventilator re-dispatches unacknowledged frames.
        poller = zmq.Poller()
        poller.register(self.push, zmq.POLLOUT)
        poller.register(self.control, zmq.POLLIN)
        while not self.stopping:
            try:
                self.push.send_multipart(out, copy=False, flags=zmq.NOBLOCK)
                break
            except zmq.Again:
                events = dict(poller.poll(POLL_MS))
                if events.get(self.control) and self._stop_requested():
                    # not self.stop(): that is for signals (a second one interrupts harder)
                    self.log.info("stop from the sink while a result waited to be sent")
                    self._sink_stop = True
                    return
        else:
            return
        self.counters[Count.PROCESSED] += 1
        if self.counters[Count.PROCESSED] == 1:
            self.counters[Count.FIRST_NS] = t0
        self.counters[Count.LAST_NS] = time.time_ns()
        self.counters[Count.BYTES] += frame.nbytes
        self.counters[Count.BUSY_NS] += time.time_ns() - t0
