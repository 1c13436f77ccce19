"""A hand-driven frames stream for recorder and viewer tests: real XPUB + ROUTER sockets on
loopback, messages encoded with framepipe.wire.protocol, so a test decides exactly which frame
ids, sequence numbers and pixel values a subscriber gets (and which it does not)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import zmq

from framepipe.wire.messages import AcquisitionStart, Bye, Done, Hello, Welcome
from framepipe.wire.protocol import data_header, decode, encode_control, encode_data, to_ranges


class StreamFeeder:
    """The publisher side of the frames stream, driven step by step by a test."""

    def __init__(self, frames_port: int, sync_port: int, camera: dict[str, Any] | None = None):
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.pub.setsockopt(zmq.XPUB_NODROP, 1)  # lossless: only the test decides what is dropped
        self.pub.setsockopt(zmq.SNDTIMEO, 30_000)
        self.pub.bind(f"tcp://127.0.0.1:{frames_port}")
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(f"tcp://127.0.0.1:{sync_port}")
        self.camera = camera or {"source": "test-feeder", "model": "hand-built stream", "exposure_us": 125.0}
        self.seq = 0
        self.published: list[int] = []
        self.subscriptions = 0
        self.hellos: list[str] = []
        self.byes: list[Bye] = []
        #: the acquisition's start went out (before the first frame, as the publisher does)
        self.started = False
        self.acquisition = 1

    def start(self, name: str = "run", frames: int = 0) -> None:
        """The acquisition's start message (the first send does it if the test did not)."""
        start = AcquisitionStart(
            acquisition=self.acquisition,
            name=name,
            run="run",
            run_id="feeder",
            frames=frames,
            settings={"kind": "test-feeder"},
            camera=self.camera,
            seq=self.seq,
        )
        self.pub.send_multipart(encode_control(start))
        self.started = True

    def _service(self, timeout_ms: int) -> None:
        poller = zmq.Poller()
        poller.register(self.pub, zmq.POLLIN)
        poller.register(self.router, zmq.POLLIN)
        events = dict(poller.poll(timeout_ms))
        if self.pub in events:
            msg = self.pub.recv()
            if msg[:1] == b"\x01":
                self.subscriptions += 1
        if self.router in events:
            peer, _, raw = self.router.recv_multipart()
            req = decode([raw], max_payload_bytes=0).control  # a recorder's hello or bye
            if isinstance(req, Hello):
                self.hellos.append(req.name)
                reply = encode_control(Welcome(stream="frames", seq=self.seq, camera=self.camera))
            else:
                assert isinstance(req, Bye), f"unexpected sync request {req!r}"
                self.byes.append(req)
                reply = encode_control(Done())
            self.router.send_multipart([peer, b"", *reply])

    def wait_for_subscribers(self, n: int = 1, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.hellos) < n or self.subscriptions < n:
            assert time.monotonic() < deadline, f"recorder(s) did not connect: hellos={self.hellos}"
            self._service(100)

    def wait_for_subscriptions(self, n: int = 1, timeout: float = 60.0) -> None:
        """Until ``n`` SUB sockets subscribed: passive subscribers (a viewer) say no hello."""
        deadline = time.monotonic() + timeout
        while self.subscriptions < n:
            assert time.monotonic() < deadline, f"{self.subscriptions} of {n} subscription(s) arrived"
            self._service(100)

    def next_acquisition(self) -> None:
        """The next acquisition: its id, a sequence from 0 again; its start goes with its first send."""
        self.acquisition += 1
        self.seq = 0
        self.published = []
        self.started = False

    def send(self, frame_id: int, array: np.ndarray, encoding: str = "none") -> None:
        if not self.started:
            self.start()
        header = data_header(
            "frame", array, frame_id=frame_id, seq=self.seq, t_acq_ns=time.time_ns(), acquisition=self.acquisition
        )
        self.pub.send_multipart(encode_data(header, array, encoding=encoding), copy=False)
        self.seq += 1
        self.published.append(frame_id)
        self._service(0)

    def drop(self, frame_id: int) -> None:
        """Frame ``frame_id`` is published but lost on the way (a PUB drop): the sequence moves on."""
        if not self.started:
            self.start()
        self.seq += 1
        self.published.append(frame_id)

    def send_raw(self, parts: list[bytes]) -> None:
        self.pub.send_multipart(parts)

    def finish(self, n_byes: int = 1, timeout: float = 60.0) -> None:
        """End of stream, repeated until ``n_byes`` subscribers said bye."""
        if not self.started:
            self.start()
        eos = encode_control(
            "eos", stream="frames", reason="complete", seq_last=self.seq - 1, count=self.seq,
            frame_ids=to_ranges(self.published), acquisition=self.acquisition,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:  # at least once: passive subscribers say no bye
            self.pub.send_multipart(eos)
            self._service(200)
            if len(self.byes) >= n_byes:
                return
            assert time.monotonic() < deadline, f"no bye from the recorder(s): {self.byes}"

    def close(self) -> None:
        self.pub.close(linger=0)
        self.router.close(linger=0)
        self.ctx.term()
