"""The recorder: subscribes to one stream (frames or results) and writes it to HDF5.

At end of stream the recorder compares what it holds with the frame ids the stream says
it carried, and writes the frame ledger: missing ids, counts, and ``complete``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from framepipe import __version__
from framepipe.component import POLL_MS, Component
from framepipe.config import Config
from framepipe.errors import ProtocolError, RecorderError
from framepipe.ledger import FrameLedger
from framepipe.protocol import from_ranges
from framepipe.subscribers.h5file import FrameFile
from framepipe.subscription import Subscription


class Recorder(Component):
    """SUB to a stream → HDF5 file with a frame ledger."""

    role = "recorder"

    def __init__(self, config: Config, name: str):
        super().__init__(config, name)
        self.rec = config.recorder(name)
        self.ledger = FrameLedger()
        self.file: FrameFile | None = None

    def path(self) -> str:
        run = self.config.run
        return self.rec.path.format(data_dir=run.data_dir, run=run.name, stream=self.rec.stream, name=self.name)

    def run(self) -> int:
        if self.rec.stream == "frames":
            pub = self.config.publisher
            pub_url, sync_url, timeout = (
                pub.connect_url(pub.frames_port),
                pub.connect_url(pub.sync_port),
                pub.sync_timeout_s,
            )
        else:
            sink = self.config.sink
            pub_url, sync_url, timeout = (
                sink.connect_url(sink.results_port),
                sink.connect_url(sink.sync_port),
                sink.sync_timeout_s,
            )
        self.sub = Subscription(
            self, stream=self.rec.stream, pub_url=pub_url, sync_url=sync_url, hwm=self.rec.hwm_frames
        )
        self.file = FrameFile(
            self.path(),
            attrs={
                "run": self.config.run.name,
                "stream": self.rec.stream,
                "framepipe_version": __version__,
                "config": self.config.model_dump_json(),
            },
        )
        self.file.open()
        self.ready(f"writing {self.path()}", status_section=self.rec)
        welcome = self.sub.hello(timeout)
        self.log.info("%s stream: welcome from %s, recording", self.rec.stream, self.sub.sync_url)
        if isinstance(welcome.get("camera"), dict):
            self.file.set_camera(welcome["camera"])
        # start sync with this host: round trip and the publisher's clock offset (sync.py)
        self.file.set_attrs({f"sync_{k}": welcome[k] for k in ("rtt_ns", "clock_offset_ns") if k in welcome})
        code = 0
        try:
            while not self.stopping:
                if not self.sub.sub.poll(POLL_MS):
                    continue
                if self._drain():
                    break
        except RecorderError as e:
            self.log.error("%s", e)
            code = 1
        finally:
            self._close()
        seq = self.sub.sequence
        if self.sub.eos is not None:
            self.sub.bye(5.0, written=self.counters["written"], gaps=seq.gaps, complete=self.ledger.complete())
        return code

    def _drain(self) -> bool:
        """Write what is waiting; True at end of stream."""
        assert self.file is not None
        for _ in range(64):
            msg = self.sub.receive()
            if msg is None:
                return False
            if msg.kind == "eos":
                try:
                    self.ledger.expect(from_ranges(msg.header.get("frame_ids", [])))
                except ProtocolError as e:
                    self.reject(e, self.rec.stream)
                self.log.info("end of stream (%s)", msg.header.get("reason"))
                return True
            assert msg.array is not None
            if not self.ledger.add(msg.frame_id):
                continue
            now = time.time_ns()
            if self.counters["written"] == 0:
                self.counters["first_ns"] = now
            self.file.append(msg.array, frame_id=msg.frame_id, t_acq_ns=msg.header["t_acq_ns"], t_recv_ns=now)
            self.counters["written"] += 1
            self.counters["bytes"] += msg.array.nbytes
            self.counters["last_ns"] = now
        return False

    def _close(self) -> None:
        if self.file is None:
            return
        led = self.ledger.summary()
        ledger: dict[str, Any] = {
            "complete": bool(self.sub.eos is not None and not led["missing"]),
            "received": led["received"],
            "written": self.counters["written"],
            "missing": led["missing"],
            "dropped_upstream": self.sub.sequence.gaps,
            "rejected": self.counters["rejected"],
            "missing_ids": self.ledger.missing(),
        }
        self.file.close(ledger)
        self.counters["missing"] = led["missing"]
        self.counters["gaps"] = self.sub.sequence.gaps
        self.log.info("closed %s: %d frame(s), %d missing", self.path(), self.counters["written"], led["missing"])

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["path"] = self.path()
        try:
            out["file_bytes"] = os.stat(out["path"]).st_size
        except OSError:
            pass  # not created yet
        sub = getattr(self, "sub", None)
        if sub is not None and "gaps" not in out:
            out["gaps"] = sub.sequence.gaps  # live; the final figure is set at close
        return out
