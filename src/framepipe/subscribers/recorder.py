"""The recorder: subscribes to one stream (frames or results) and writes it to HDF5.

Files (see docs/hdf5-layout.md): one per run, or a rotated series (a new file every
``rotate_frames`` frames or ``rotate_bytes`` stored bytes, ``{index}`` in the name, never
overwriting). Flushes every ``flush_frames`` frames or ``flush_s`` seconds, whichever comes
first, so SWMR readers see new frames and a ``kill -9`` loses at most what was not flushed.

At the end (end of stream, stop, or an error) the recorder compares the frame ids it wrote
with those the stream says it carried and writes the frame ledger into every file of the
series: missing ids, counts (received, written, dropped upstream, rejected, duplicates) and
``complete``, true only when the end of stream arrived and nothing it carried is missing. A write
error (full disk, unwritable directory) stops the recorder with a clear message and exit
code 1; it says bye to the publisher first, so the stream and its other subscribers go on.
"""

from __future__ import annotations

import collections
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from framepipe import __version__
from framepipe.config import Config, run_id_now
from framepipe.core.errors import ProtocolError, RecorderError
from framepipe.core.ledger import FrameLedger
from framepipe.runtime.component import Component
from framepipe.storage.compression import Codec
from framepipe.storage.h5file import FrameFile, finalize, now_iso
from framepipe.wire.protocol import Message, from_ranges
from framepipe.wire.sockets import POLL_MS
from framepipe.wire.subscription import Subscription

#: how long the bye to the publisher may take
BYE_TIMEOUT_S = 5.0


class Recorder(Component):
    """SUB to a stream → HDF5 file(s) with a frame ledger."""

    role = "recorder"

    def __init__(self, config: Config, name: str):
        super().__init__(config, name)
        self.rec = config.recorder(name)
        #: frame ids written to the files (what the files hold)
        self.ledger = FrameLedger()
        self.codec = Codec(self.rec.compression, self.rec.compression_level)
        self.run_id = config.run.id or run_id_now()
        self.file: FrameFile | None = None
        #: every file of the series, closed or open, with its close time
        self.files: list[tuple[FrameFile, str]] = []
        self.camera: dict[str, Any] = {}
        self.sync_attrs: dict[str, Any] = {}
        self.error: str | None = None
        self._unflushed = 0
        self._flushed_at = time.monotonic()
        self.sub: Subscription | None = None
        # compression pipeline: frames received, their chunks being compressed by the pool
        # (made in run(): __init__ opens nothing)
        self._pool: ThreadPoolExecutor | None = None
        #: bound of the pipeline, in frames (memory: this many received frames held)
        self._max_pending = 0
        self._pending: collections.deque[tuple[Future[Any] | None, Message, int]] = collections.deque()
        self._pending_ids: set[int] = set()

    def path(self, index: int = 0) -> str:
        run = self.config.run
        return self.rec.path.format(
            data_dir=run.data_dir, run=run.name, stream=self.rec.stream, name=self.name, run_id=self.run_id, index=index
        )

    # ------------------------------------------------------------------ files
    def _open_next(self) -> FrameFile:
        index = len(self.files)
        frame_file = FrameFile(
            self.path(index),
            attrs={
                "run": self.config.run.name,
                "run_id": self.run_id,
                "stream": self.rec.stream,
                "recorder": self.name,
                "file_index": index,
                "framepipe_version": __version__,
                "config": self.config.model_dump_json(),
            },
            codec=self.codec,
            swmr=self.rec.swmr,
            direct=self.rec.direct_chunks,
        )
        frame_file.open()
        if self.camera:
            frame_file.set_camera(self.camera)
        if self.sync_attrs:
            frame_file.set_attrs(self.sync_attrs)
        self.files.append((frame_file, ""))
        self.file = frame_file
        self.counters["files"] = len(self.files)
        return frame_file

    def _close_current(self) -> None:
        """Close the open file (even after an error); remember when."""
        if self.file is None:
            return
        frame_file, self.file = self.file, None
        try:
            frame_file.close()
        finally:
            self.files[-1] = (frame_file, now_iso())
            self.counters["stored_bytes"] += frame_file.stored_bytes
            self.counters["raw_bytes"] += frame_file.raw_bytes
            self._unflushed = 0

    def _flush(self) -> None:
        if self.file is not None and self._unflushed:
            self.file.flush()
        self._unflushed = 0
        self._flushed_at = time.monotonic()

    def _flush_due(self) -> bool:
        if not self._unflushed:
            return False
        rec = self.rec
        return bool(
            (rec.flush_frames and self._unflushed >= rec.flush_frames)
            or (rec.flush_s and time.monotonic() - self._flushed_at >= rec.flush_s)
        )

    # ------------------------------------------------------------------ loop
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
        if not self.codec.direct and self.rec.direct_chunks:
            self.log.warning("%s: no direct chunk compressor here; writing through HDF5's filter", self.codec.kind)
        try:
            # the first file now, so an unwritable directory is an error before the run starts
            self._open_next()
        except RecorderError as e:
            self.error = str(e)
            self.log.error("%s", e)
            self.counters["written"] = 0
            return 1
        self.sub = Subscription(
            self, stream=self.rec.stream, pub_url=pub_url, sync_url=sync_url, hwm=self.rec.hwm_frames
        )
        threads = self.rec.compress_threads if self.rec.direct_chunks and self.codec.direct else 0
        if threads and self.codec.kind != "none":
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"{self.name}-compress")
            self._max_pending = 2 * threads
        self.ready(
            f"writing {self.path(0)} compression={self.codec.kind} direct={self.rec.direct_chunks}",
            status_section=self.rec,
        )
        code = 0
        said_hello = False
        try:
            welcome = self.sub.hello(timeout)
            said_hello = True
            self.log.info("%s stream: welcome from %s, recording", self.rec.stream, self.sub.sync_url)
            assert self.file is not None
            if isinstance(welcome.get("camera"), dict):
                self.camera = welcome["camera"]
                self.file.set_camera(self.camera)
            # start sync with this host: round trip and the publisher's clock offset (sync.py);
            # kept for the files a rotation opens later
            self.sync_attrs = {f"sync_{k}": welcome[k] for k in ("rtt_ns", "clock_offset_ns") if k in welcome}
            self.file.set_attrs(self.sync_attrs)
            while not self.stopping:
                if self.sub.sub.poll(POLL_MS) and self._drain():
                    break
                if self._flush_due():
                    self._flush()
        except RecorderError as e:
            self.error = str(e)
            self.log.error("%s", e)
            code = 1
            # stop receiving at once: a lossless publisher must not wait on our full queue
            self.sub.sub.close(linger=0)
        finally:
            code = self._finish(code)
        if said_hello:
            seq = self.sub.sequence
            self.sub.bye(
                BYE_TIMEOUT_S,
                written=self.counters["written"],
                gaps=seq.gaps,
                missing=self.counters["missing"],
                complete=self.counters["complete"] == 1,
                error=self.error,
            )
        return code

    def _drain(self) -> bool:
        """Take what is waiting and write it; True at end of stream (everything written)."""
        assert self.sub is not None
        for _ in range(64):
            msg = self.sub.receive()
            if msg is None:
                # nothing else to do: write what is still being compressed, keeping latency low
                self._write_pending(0)
                return False
            if msg.kind == "eos":
                self._write_pending(0)
                self.counters["cpu_last_ns"] = time.process_time_ns()
                try:
                    self.ledger.expect(from_ranges(msg.header.get("frame_ids", [])))
                except ProtocolError as e:
                    self.reject(e, self.rec.stream)
                self.log.info("end of stream (%s)", msg.header.get("reason"))
                return True
            assert msg.array is not None
            self.counters["received"] += 1
            frame_id = msg.frame_id
            if frame_id in self.ledger or frame_id in self._pending_ids:
                self.ledger.duplicates += 1
                self.counters["duplicates"] += 1
                continue
            now = time.time_ns()
            # compression starts now, in a pool thread (ctypes and zlib release the GIL), while
            # this thread receives and writes; the message buffer lives until its chunk is written
            job = self._pool.submit(self.codec.compress, msg.array) if self._pool is not None else None
            self._pending.append((job, msg, now))
            self._pending_ids.add(frame_id)
            self._write_pending(self._max_pending)
        return False

    def _head_ready(self) -> bool:
        job = self._pending[0][0]
        return job is None or job.done()

    def _write_pending(self, keep: int) -> None:
        """Write pending frames in arrival order until at most ``keep`` are left
        (more if the oldest ones are already compressed)."""
        while self._pending and (
            len(self._pending) > keep or self._pending[0][0] is None or self._pending[0][0].done()
        ):
            job, msg, t_recv = self._pending.popleft()
            self._pending_ids.discard(msg.frame_id)
            assert msg.array is not None
            t0 = time.time_ns()
            try:
                chunk = job.result() if job is not None else None
            except Exception as e:  # a codec failure is a recorder failure, with the frame named
                raise RecorderError(f"{self.codec.kind} compression failed at frame {msg.frame_id}: {e}") from e
            if self.file is None:
                self._open_next()
            assert self.file is not None
            self.file.append(
                msg.array,
                frame_id=msg.frame_id,
                t_acq_ns=msg.header["t_acq_ns"],
                t_recv_ns=t_recv,
                chunk=chunk,
                fields=msg.header,
            )
            self.counters["write_ns"] += time.time_ns() - t0
            self.ledger.add(msg.frame_id)
            now = time.time_ns()
            if self.counters["written"] == 0:
                self.counters["first_ns"] = now
                # CPU time of all threads, from the first frame to the end of stream (see _drain):
                # the recorder's own cost, whatever the neighbours' load. Read twice per run only:
                # CLOCK_PROCESS_CPUTIME_ID costs up to milliseconds per call on this VM.
                self.counters["cpu_first_ns"] = time.process_time_ns()
            self.counters["written"] += 1
            self.counters["bytes"] += msg.array.nbytes
            self.counters["last_ns"] = now
            self._unflushed += 1
            rec = self.rec
            if (rec.rotate_frames and self.file.n >= rec.rotate_frames) or (
                rec.rotate_bytes and self.file.stored_bytes >= rec.rotate_bytes
            ):
                self._close_current()  # the next frame opens the next file
            elif self._flush_due():
                self._flush()

    def _finish(self, code: int) -> int:
        """Close the open file and write the ledger into every file of the series."""
        if self._pending and self.error is None:
            try:
                self._write_pending(0)  # stopped by a signal: what was received is written
            except RecorderError as e:
                self.log.error("%s", e)
                self.error = str(e)
                code = 1
        self._pending.clear()
        self._pending_ids.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            self._close_current()
        except RecorderError as e:
            self.log.error("%s", e)
            self.error = self.error or str(e)
            code = 1
        assert self.sub is not None
        eos = self.sub.eos
        missing = self.ledger.missing()
        # complete: the file(s) hold every frame the stream says it carried. Why the stream
        # ended (a camera error, a stop) is end_reason's business, not complete's.
        complete = eos is not None and not missing and self.error is None
        ledger: dict[str, Any] = {
            "complete": complete,
            "end_of_stream": eos is not None,
            "end_reason": (eos or {}).get("reason", "stopped" if self.error is None else "error"),
            "error": self.error or "",
            "expected": self.ledger.expected,
            "received": self.counters["received"],
            "written": self.counters["written"],
            "missing": len(missing),
            "dropped_upstream": self.sub.sequence.gaps,
            "rejected": self.counters["rejected"],
            "duplicates": self.counters["duplicates"],
            "files": [os.path.basename(f.path) for f, _ in self.files],
            "missing_ids": missing,
        }
        camera_lost = (eos or {}).get("camera_lost")
        if isinstance(camera_lost, int):  # the frames stream: frames the camera lost before publishing
            ledger["camera_lost"] = camera_lost
        if self.error is not None:
            # After a write error (full disk, say) a reopened file would fail to close again
            # and be left flagged "open for writing"; a file without ledger already reads as
            # not complete, and the counts are in the log, the summary and the bye.
            self.log.error("no ledger written into the file(s) after the error above")
        for index, (frame_file, closed_at) in enumerate(self.files if self.error is None else []):
            per_file = {
                **ledger,
                "file_index": index,
                "written_in_file": frame_file.n,
                "first_frame_id": -1 if frame_file.first_id is None else frame_file.first_id,
                "last_frame_id": -1 if frame_file.last_id is None else frame_file.last_id,
            }
            try:
                finalize(frame_file.path, end_time=closed_at or now_iso(), ledger=per_file)
            except RecorderError as e:
                self.log.error("%s", e)
                code = 1
        self.counters["missing"] = len(missing)
        self.counters["gaps"] = self.sub.sequence.gaps
        self.counters["complete"] = int(complete)
        c = self.counters
        self.log.info(
            "closed %d file(s): written %d, received %d, missing %d, dropped upstream %d, rejected %d, "
            "duplicates %d, complete=%s",
            len(self.files),
            c["written"],
            c["received"],
            len(missing),
            self.sub.sequence.gaps,
            c["rejected"],
            c["duplicates"],
            str(complete).lower(),
        )
        return code

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["path"] = self.file.path.as_posix() if self.file is not None else self.path(max(len(self.files) - 1, 0))
        try:
            out["file_bytes"] = os.stat(out["path"]).st_size
        except OSError:
            pass  # not created yet
        sub = getattr(self, "sub", None)
        if sub is not None and "gaps" not in out:
            out["gaps"] = sub.sequence.gaps  # live; the final figure is set at close
        return out
