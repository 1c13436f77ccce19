"""The publisher: grabs frames from a camera and broadcasts them on the frames stream."""

from __future__ import annotations

import time
from typing import Any

from framepipe.cameras import Camera, open_camera
from framepipe.config import Config, PublisherConfig
from framepipe.core.counters import Count
from framepipe.core.errors import CameraError
from framepipe.runtime.component import Component
from framepipe.runtime.status import Queue, StatusParts, StreamPeers
from framepipe.wire.broadcast import Broadcast
from framepipe.wire.protocol import data_header, encode_data

#: after a stop by signal, how long to wait for subscribers' byes
STOP_GRACE_S = 3.0


class Publisher(Component):
    """Camera → PUB frames. Waits for the configured subscribers before the first frame."""

    role = "publisher"

    def __init__(self, config: Config, camera: Camera | None = None, name: str | None = None):
        super().__init__(config, name)
        self._camera = camera

    def setup(self) -> None:
        # the camera first: a camera that cannot open binds nothing
        cfg = self.config.publisher
        self.camera = self._camera or open_camera(self.config.camera)
        self.camera.open()
        try:
            self.stream = self._broadcast(cfg)
        except BaseException:
            self.camera.close()  # setup() did not finish, so teardown() will not run
            raise

    def _broadcast(self, cfg: PublisherConfig) -> Broadcast:
        return Broadcast(
            self,
            stream="frames",
            pub_url=cfg.bind_url(cfg.frames_port),
            sync_url=cfg.bind_url(cfg.sync_port),
            preview_url=cfg.bind_url(cfg.preview_port),
            subscribers=cfg.subscribers,
            hwm=cfg.hwm_frames,
            lossless=cfg.policy == "lossless",
            camera=self.camera.metadata(),
        )

    def teardown(self) -> None:
        self.camera.close()

    def run(self) -> int:
        cfg = self.config.publisher
        self.open()
        self.ready(f"policy={cfg.policy}")
        self.stream.wait_for_subscribers(cfg.sync_timeout_s)
        self.log.info("all subscribers here: publishing")
        try:
            return self._publish(self.camera)
        finally:
            self.counters[Count.CAMERA_LOST] = self.camera.frames_lost

    def _publish(self, camera: Camera) -> int:
        stream = self.stream
        grab_timeout = self.config.camera.grab_timeout_s
        reason, code = "complete", 0
        sockets = stream.sockets()
        try:
            while not self.stopping:
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
                    **frame.extra,
                )
                if not stream.publish(encode_data(header, frame.array), frame.frame_id):
                    break
                self.counters[Count.PUBLISHED] += 1
                self.counters[Count.BYTES] += frame.array.nbytes
                self.counters[Count.LAST_NS] = time.time_ns()
                # between frames: subscription changes and late hellos, without waiting
                events = stream.poll(timeout_ms=0) if any(s.poll(0) for s in sockets) else {}
                if events:
                    stream.service(events)
        except CameraError as e:
            self.log.error("camera failed after %d frames: %s", self.counters[Count.PUBLISHED], e)
            reason, code = f"camera error: {e}", 2
        if self.stopping:
            reason = "stopped"
        self.counters[Count.BLOCKED_MS] = int(stream.blocked_s * 1000)
        self.log.info("end of stream (%s) after %d frames", reason, self.counters[Count.PUBLISHED])
        timeout = STOP_GRACE_S if self.stopping else self.config.run.finish_timeout_s
        # frames the camera itself lost (gaps in its frame ids): the recorders' ledgers say so
        stream.finish(timeout, reason=reason, camera_lost=camera.frames_lost)
        return code

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        if self.set_up:  # live figures for the dashboard, while it runs
            out[Count.BLOCKED_MS] = int(self.stream.blocked_s * 1000)
            out[Count.SUBSCRIBERS] = sorted(self.stream.hellos)
        return out

    def status_parts(self) -> StatusParts:
        return StatusParts(peers=StreamPeers.of(self.stream), queue=Queue())
