"""FFT workers: PULL frames from the ventilator, PUSH spectra to the sink.

A worker connects (it owns no port), so workers on any machine can come and go. It
sends a heartbeat to the sink every ``heartbeat_s`` so a dead or hung worker is noticed
by name, and stops on the sink's ``stop`` control message or on SIGINT/SIGTERM.
Frames queued in a worker that dies are not lost: the ventilator re-sends them.
"""

from __future__ import annotations

import os
import socket as pysocket
import time

import zmq

from framepipe.config import Config
from framepipe.core.counters import Count
from framepipe.core.errors import ProtocolError
from framepipe.processing.fft import spectrum
from framepipe.runtime.component import Component
from framepipe.runtime.status import Queue, StatusParts
from framepipe.wire.frames import FrameBuffers, frame_array
from framepipe.wire.messages import Heartbeat, Stop
from framepipe.wire.protocol import TOPIC_STOP, data_header, decode, encode_control, encode_data
from framepipe.wire.sockets import POLL_MS

#: how long a worker's own pings to the ventilator may go unanswered (ms): effectively
#: never; a dead ventilator closes the TCP connection, a hung one is waited for
WORKER_PATIENCE_MS = 3_600_000


def worker_name(index: int | None = None, host: str | None = None) -> str:
    """host-pid, unique across a LAN deployment; index for pools (-n)."""
    base = f"worker-{host or pysocket.gethostname()}-{os.getpid()}"
    return base if index is None else f"{base}-{index}"


class Worker(Component):
    """PULL frames → FFT → PUSH results."""

    role = "worker"

    def __init__(self, config: Config, name: str | None = None):
        super().__init__(config, name or worker_name())
        self._sink_stop = False  # the sink said stop (a signal sets self.stopping instead)
        self._frame_buffers = FrameBuffers()

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
        self.push = self.socket(zmq.PUSH, sndhwm=max(cfg.hwm_frames, 2))
        self.connect(self.push, sink.connect_url(sink.results_in_port))
        self.control = self.socket(zmq.SUB)
        self.control.setsockopt(zmq.SUBSCRIBE, TOPIC_STOP)
        self.connect(self.control, sink.connect_url(sink.control_port))

    def status_parts(self) -> StatusParts:
        return StatusParts(queue=Queue())

    def run(self) -> int:
        cfg = self.config.workers
        self.open()
        self.ready(f"result={cfg.result}")
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
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
            if events.get(self.pull):
                self._process_one()
        self.log.info("processed %d frame(s)", self.counters[Count.PROCESSED])
        return 0

    def _heartbeat(self) -> None:
        try:
            self.push.send_multipart(
                encode_control(Heartbeat(name=self.name, processed=self.counters[Count.PROCESSED])), flags=zmq.NOBLOCK
            )
        except zmq.Again:
            pass  # the sink is not there or is full: it will hear from us with the next result

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
            frame = frame_array(msg, self._frame_buffers)  # decompressed into a reused buffer
        except ProtocolError as e:
            self.reject(e, "tasks")
            return
        t0 = time.time_ns()
        result = spectrum(frame, self.config.workers.result)
        h = msg.header
        header = data_header(
            "result",
            result,
            frame_id=msg.frame_id,
            seq=msg.seq,
            t_acq_ns=h["t_acq_ns"],
            t_start_ns=t0,
            t_done_ns=time.time_ns(),
            worker=self.name,
            representation=self.config.workers.result,
            attempt=h.get("attempt", 0),
            frame_shape=h["shape"],
            frame_dtype=h["dtype"],
            # the sink takes a result only for a task of its acquisition, by its token
            **{k: h[k] for k in ("acquisition", "token") if k in h},
        )
        out = encode_data(header, result)
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
