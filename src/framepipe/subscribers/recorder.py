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

Those decisions (pending frames, rotation, flushes, the ledger) are
:class:`framepipe.core.series.RecordingSeries`'s; this module is the loop that feeds it the
stream and does the HDF5 work it asks for.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from framepipe import __version__
from framepipe.config import Config, run_id_now
from framepipe.core import bitshuffle
from framepipe.core.counters import Count
from framepipe.core.errors import ProtocolError, RecorderError
from framepipe.core.frame import descriptor
from framepipe.core.series import UPSTREAM_LOST, RecordingSeries, Step
from framepipe.runtime.component import Component
from framepipe.runtime.status import Queue, StartSync, StatusParts
from framepipe.storage.compression import Codec
from framepipe.storage.h5file import FrameFile, finalize, now_iso, open_for_reading
from framepipe.wire.messages import AcquisitionStart, EndOfStream
from framepipe.wire.protocol import Message, from_ranges
from framepipe.wire.sockets import POLL_MS
from framepipe.wire.subscription import Subscription

#: how long the bye to the publisher may take
BYE_TIMEOUT_S = 5.0
#: ... when stopped by a signal with no acquisition open (nothing to report)
BYE_WHEN_STOPPED_S = 1.0


@dataclasses.dataclass(slots=True)
class Received:
    """A received frame until it is written (the message's buffer lives until then)."""

    msg: Message
    t_recv_ns: int
    #: its chunk being compressed by the pool; None: compressed when written
    job: Future[Any] | None = None
    #: the chunk as received (compressed by the publisher, in the file's format): stored as is
    chunk: Any = None

    def compressed(self) -> bool:
        return self.job is None or self.job.done()


@dataclasses.dataclass(slots=True)
class WireTally:
    """How one acquisition's frames travelled: bytes decoded and on the wire, and how many
    compressed chunks were stored as received (written into the ledger, shown by inspect)."""

    nbytes: int = 0
    wire_bytes: int = 0
    as_received: int = 0

    def add(self, nbytes: int, wire_bytes: int, *, as_received: bool) -> None:
        self.nbytes += nbytes
        self.wire_bytes += wire_bytes
        self.as_received += as_received

    def attrs(self, encoding: str) -> dict[str, Any]:
        ratio = round(self.nbytes / self.wire_bytes, 3) if self.wire_bytes else 1.0
        return {"wire_encoding": encoding, "wire_ratio": ratio, "chunks_as_received": self.as_received}


class Recorder(Component):
    """SUB to a stream → HDF5 file(s) with a frame ledger."""

    role = "recorder"

    def __init__(self, config: Config, name: str):
        super().__init__(config, name)
        self.rec = config.recorder(name)
        self.codec = Codec(self.rec.compression, self.rec.compression_level)
        self.run_id = config.run.id or run_id_now()
        #: the acquisition being recorded (its start message); None between acquisitions
        self.acquisition: AcquisitionStart | None = None
        self.file: FrameFile | None = None
        #: every file of the series, closed or open, with its close time
        self.files: list[tuple[FrameFile, str]] = []
        self.camera: dict[str, Any] = {}
        self.sync_attrs: dict[str, Any] = {}
        self.error: str | None = None
        #: the acquisition was interrupted before its first frame: its empty file(s) removed
        self.removed_empty = False
        # compression pipeline: frames received, their chunks being compressed by the pool
        # (made in run(): __init__ opens nothing)
        self._pool: ThreadPoolExecutor | None = None
        direct = self.rec.direct_chunks and self.codec.direct and self.codec.kind != "none"
        self._threads = self.rec.compress_threads if direct else 0
        #: a frame that arrives bitshuffle-LZ4-compressed is stored as received when the file's
        #: filter is the same (the publisher made byte for byte the chunk we would have made)
        self._as_received = direct and self.codec.kind == bitshuffle.NAME
        self.series = self._new_series()
        self._wire = WireTally()

    def _new_series(self) -> RecordingSeries[Received]:
        return RecordingSeries(
            flush_frames=self.rec.flush_frames,
            flush_s=self.rec.flush_s,
            rotate_frames=self.rec.rotate_frames,
            rotate_bytes=self.rec.rotate_bytes,
            # the pipeline's bound, in frames (memory: this many received frames held)
            max_pending=2 * self._threads,
            clock=time.monotonic,
        )

    def path(self, index: int = 0) -> str:
        """File ``index`` of the acquisition's series, from the path template: ``{run}`` and
        ``{run_id}`` are the deployment's (from the start message), ``{acquisition}`` and
        ``{acquisition_name}`` the acquisition's."""
        acq = self.acquisition
        if acq is None:
            return self.rec.file_path(self.config.run, self.run_id, index)
        return self.rec.file_path(
            self.config.run,
            acq.run_id,
            index,
            run_name=acq.run,
            acquisition=acq.acquisition,
            acquisition_name=acq.name,
        )

    def _free_path(self, index: int) -> str:
        """The path of file ``index``, or its next free part file: a recorder never
        overwrites, and one that restarted mid-acquisition adds a part."""
        path = self.path(index)
        if not os.path.exists(path):
            return path
        stem, ext = os.path.splitext(path)
        for part in range(2, 1000):
            candidate = f"{stem}-part{part}{ext}"
            if not os.path.exists(candidate):
                self.log.warning("%s exists: writing %s (never overwriting)", path, os.path.basename(candidate))
                return candidate
        return path  # FrameFile refuses it, with the reason

    # ------------------------------------------------------------------ files
    def _open_next(self) -> FrameFile:
        index = self.series.file_index
        acq = self.acquisition
        attrs: dict[str, Any] = {
            "run": acq.run if acq is not None else self.config.run.name,
            "run_id": acq.run_id if acq is not None else self.run_id,
            "stream": self.rec.stream,
            "recorder": self.name,
            "file_index": index,
            "framepipe_version": __version__,
        }
        if acq is not None:
            # the acquisition's own settings, from its start message: where they came from
            attrs.update(
                acquisition=acq.acquisition,
                acquisition_name=acq.name,
                frames_requested=acq.frames,
                # the camera's settings as the acquisition applied them (its start message),
                # never this recorder's copy of the camera config; and this recorder's own section
                config=json.dumps({"camera": acq.settings, "recorder": self.rec.model_dump()}),
            )
        frame_file = FrameFile(
            self._free_path(index),
            attrs=attrs,
            codec=self.codec,
            swmr=self.rec.swmr,
            direct=self.rec.direct_chunks,
        )
        frame_file.open()
        if acq is not None and acq.camera:
            frame_file.set_camera({**acq.camera, **acq.settings})
        elif self.camera:
            frame_file.set_camera(self.camera)
        if self.sync_attrs:
            frame_file.set_attrs(self.sync_attrs)
        self.files.append((frame_file, ""))
        self.file = frame_file
        self.series.file_opened()
        self.counters[Count.FILES] = len(self.files)
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
            self.counters[Count.STORED_BYTES] += frame_file.stored_bytes
            self.counters[Count.RAW_BYTES] += frame_file.raw_bytes
            self.series.file_closed()

    def _flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.series.flushed()

    # ------------------------------------------------------------------ loop
    def _stream_urls(self) -> tuple[str, str, float]:
        """The stream's PUB and sync addresses, and how long to wait for its hello."""
        if self.rec.stream == "frames":
            pub = self.config.publisher
            return pub.connect_url(pub.frames_port), pub.connect_url(pub.sync_port), pub.sync_timeout_s
        sink = self.config.sink
        return sink.connect_url(sink.results_port), sink.connect_url(sink.sync_port), sink.sync_timeout_s

    def setup(self) -> None:
        pub_url, sync_url, _ = self._stream_urls()
        # one tracker: the subscription counts the gaps, the series' ledger reports them
        self.sub = Subscription(
            self,
            stream=self.rec.stream,
            pub_url=pub_url,
            sync_url=sync_url,
            hwm=self.rec.hwm_frames,
            sequence=self.series.sequence,
            shared_memory=self.config.transport.shared_memory,
        )

    def status_parts(self) -> StatusParts:
        return StatusParts(sync=StartSync.of(self.sub.welcome), queue=Queue())

    def run(self) -> int:
        if not self.codec.direct and self.rec.direct_chunks:
            self.log.warning("%s: no direct chunk compressor here; writing through HDF5's filter", self.codec.kind)
        try:
            # the directory before any socket, so an unwritable one is an error before the run
            self._check_directory()
        except RecorderError as e:
            self.error = str(e)
            self.log.error("%s", e)
            self.counters[Count.WRITTEN] = 0
            return 1
        self.open()
        if self._threads:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix=f"{self.name}-compress")
        self.ready(
            f"writing {self.rec.path} compression={self.codec.kind} "
            f"direct chunks {'on' if self.rec.direct_chunks else 'off'}",
            status_section=self.rec,
        )
        timeout = self._stream_urls()[2]
        code = 0
        try:
            self._hello(timeout)
            while not self.stopping:
                if self.sub.sub.poll(POLL_MS):
                    eos = self._drain()
                    if eos is not None:
                        code = self._end_acquisition(eos) or code
                        if not eos.stays_up:
                            break
                if self.series.flush_due():
                    self._flush()
                if self._upstream_silent():
                    abandoned = self._abandon()
                    if not self.config.run.serve:
                        code = abandoned or code
                        break
                if self.sub.upstream_restarted:
                    # a new publisher: the acquisition it was running is over. (A restarted sink
                    # is told the acquisition under way by the ventilator: the results go on.)
                    if self.acquisition is not None and self.rec.stream == "frames":
                        abandoned = self._abandon()
                        if not self.config.run.serve:
                            code = abandoned or code
                            break
                    self.log.warning("%s: the %s stream restarted: saying hello again", self.name, self.rec.stream)
                    self._hello(timeout)
        except RecorderError as e:
            self.error = str(e)
            self.log.error("%s", e)
            code = 1
            # stop receiving at once: a lossless publisher must not wait on our full queue
            self.sub.sub.close(linger=0)
        finally:
            if self.acquisition is not None:  # stopped or failed mid-acquisition
                code = self._finish(code) or code
                self._bye()
            elif self.sub.eos is None and self.said_hello:
                # stopped between acquisitions: a live publisher answers in milliseconds, and
                # one stopped with us must not hold our exit for the whole bye timeout
                self._bye(BYE_WHEN_STOPPED_S if self.stopping else BYE_TIMEOUT_S)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        return code

    def _check_directory(self) -> None:
        """The directory of the files exists or can be made (an error now, not at the first frame)."""
        directory = os.path.dirname(self.path(0)) or "."
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise RecorderError(f"{directory}: cannot create: {e.strerror or e}") from e

    said_hello = False

    def _hello(self, timeout: float) -> None:
        welcome = self.sub.hello(timeout)
        self.said_hello = True
        self.log.info("%s stream: welcome from %s, recording", self.rec.stream, self.sub.sync_url)
        if welcome.camera is not None:
            self.camera = welcome.camera
        # start sync with this host: round trip and the publisher's clock offset (sync.py);
        # kept for every file opened later
        timing = self.sub.welcome
        self.sync_attrs = {
            f"sync_{k}": timing[k] for k in ("rtt_ns", "clock_offset_ns", "clock_offset_bound_ns") if k in timing
        }
        if self.sub.acquisition is not None and self.acquisition is None:
            self._begin(self.sub.acquisition)  # joined one under way (a restart): a part file

    def _begin(self, start: AcquisitionStart) -> None:
        """An acquisition starts: a new series, its first file open before its first frame."""
        if self.acquisition is not None:
            self.log.warning("acquisition %d started before %d ended", start.acquisition, self.acquisition.acquisition)
            self._finish(0)
            self._bye()
        self.acquisition = start
        self.series = self._new_series()
        self.sub.sequence = self.series.sequence
        self.sub.sequence.start_at(start.seq or 0)
        self.files = []
        self.error = None
        self.removed_empty = False
        counts = (Count.WRITTEN, Count.RECEIVED, Count.DUPLICATES, Count.MISSING, Count.FAILED, Count.GAPS)
        for key in (*counts, Count.COMPLETE):
            self.counters.pop(key, None)
        self._wire = WireTally()
        self.wire_encoding = "none"
        self._count_earlier_parts(start)
        self._open_next()
        self.log.info("acquisition %d '%s': writing %s", start.acquisition, start.name, self.files[0][0].path)

    def _count_earlier_parts(self, start: AcquisitionStart) -> None:
        """A recorder that restarted mid-acquisition: the frames its predecessor wrote into the
        acquisition's earlier part files count as held (its ledger adds up every part)."""
        base = self.path(0)
        stem, ext = os.path.splitext(base)
        candidates = [base] + [f"{stem}-part{n}{ext}" for n in range(2, 1000)]
        for path in candidates:
            if not os.path.exists(path):
                break
            try:
                f, _ = open_for_reading(path)
                with f:
                    entry = f["entry"].attrs
                    if entry.get("acquisition") != start.acquisition or entry.get("run_id") != start.run_id:
                        continue  # another deployment's file of the same name
                    ids = f["entry/data/frame_id"][:]
            except Exception as e:  # unreadable: its frames are not counted, the ledger says missing
                self.log.warning("%s: earlier part not readable (%s): its frames count as missing", path, e)
                continue
            for frame_id in ids.tolist():
                self.series.earlier_parts.add(int(frame_id))
            self.log.info("%s: an earlier part of this acquisition, %d frame(s)", os.path.basename(path), len(ids))

    def _end_acquisition(self, eos: EndOfStream) -> int:
        """The acquisition's end of stream: the ledger into its files, the bye with counts."""
        if self.acquisition is None:
            if eos.acquisition is not None:
                self.log.warning("end of acquisition %s, which this recorder never saw start", eos.acquisition)
            self._bye()
            return 0
        code = self._finish(0)
        self.sub.release_all()
        self._bye()
        self.acquisition = None
        return code

    def _upstream_silent(self) -> bool:
        """An acquisition is open and its stream said nothing (not even a heartbeat) for
        ``limits.upstream_timeout_s``: its publisher is gone."""
        if self.acquisition is None:
            return False
        return time.monotonic() - self.sub.last_heard > self.config.limits.upstream_timeout_s

    def _abandon(self) -> int:
        """End the open acquisition without its end of stream: files closed with their
        ledger, ``complete=false``, ``end_reason`` upstream lost; then wait for the next."""
        assert self.acquisition is not None
        silent = time.monotonic() - self.sub.last_heard
        why = "its publisher restarted" if self.sub.upstream_restarted else f"no message for {silent:.0f} s"
        self.log.error(
            "%s stream: %s: acquisition %d ends as %s",
            self.rec.stream,
            why,
            self.acquisition.acquisition,
            UPSTREAM_LOST,
        )
        self._write_pending(drain=True)
        self.series.abandon(UPSTREAM_LOST)
        code = self._finish(0)
        self.sub.release_all()
        self.acquisition = None
        self.sub.acquisition = None
        return code or 1

    def _bye(self, timeout_s: float = BYE_TIMEOUT_S) -> None:
        seq = self.sub.sequence
        self.sub.bye(
            timeout_s,
            written=self.counters[Count.WRITTEN],
            gaps=seq.gaps,
            missing=self.counters[Count.MISSING],
            failed=self.counters[Count.FAILED] or None,
            complete=self.counters[Count.COMPLETE] == 1 if self.files or self.removed_empty else None,
            error=self.error,
            acquisition=self.acquisition.acquisition if self.acquisition is not None else None,
            expected=self.series.written_ids.expected,
            path=self.files[0][0].path.as_posix() if self.files else None,
        )

    def _drain(self) -> EndOfStream | None:
        """Take what is waiting and write it; the end of stream when it came (all written)."""
        for _ in range(64):
            msg = self.sub.receive()
            if msg is None:
                # nothing else to do: write what is still being compressed, keeping latency low
                self._write_pending(drain=True)
                return None
            if isinstance(msg.control, AcquisitionStart):
                self._write_pending(drain=True)
                self._begin(msg.control)
                continue
            if isinstance(msg.control, EndOfStream):
                eos = msg.control
                self._write_pending(drain=True)
                self.counters[Count.CPU_LAST_NS] = time.process_time_ns()
                try:
                    frame_ids: list[int] | None = from_ranges(eos.frame_ids or [])
                except ProtocolError as e:
                    self.reject(e, self.rec.stream)
                    frame_ids = None
                self.series.end_of_stream(eos.reason, eos.camera_lost, frame_ids)
                self.log.info("end of stream (%s)", eos.reason)
                return eos
            if self.acquisition is None or msg.header.get("acquisition") not in (None, self.acquisition.acquisition):
                self.counters[Count.STALE] += 1  # between acquisitions: not part of any file
                self.sub.release(msg)
                continue
            if msg.failed is not None:
                # the processor failed on it: listed in the ledger as failed, nothing to write
                if self.series.failed(msg.frame_id, msg.failed):
                    self.counters[Count.FAILED] += 1
                else:
                    self.counters[Count.DUPLICATES] = self.series.duplicates
                self.counters[Count.RECEIVED] = self.series.received
                continue
            received = Received(msg, time.time_ns())
            if msg.encoding is not None:
                self.wire_encoding = msg.encoding
                if self._as_received and msg.encoding == bitshuffle.NAME:
                    received.chunk = msg.payload
                else:
                    try:  # another file format: decoded here, compressed as any frame is
                        msg.decoded()  # decodes, once
                    except ProtocolError as e:
                        self.reject(e, self.rec.stream)
                        continue
            accepted = self.series.arrive(msg.frame_id, received)
            self.counters[Count.RECEIVED] = self.series.received
            if not accepted:
                self.counters[Count.DUPLICATES] = self.series.duplicates
                self.sub.release(msg)
                continue
            # compression starts now, in a pool thread (ctypes and zlib release the GIL), while
            # this thread receives and writes; the message buffer lives until its chunk is written
            if self._pool is not None and received.chunk is None and (not msg.outputs or not msg.outputs[0].scalar):
                received.job = self._pool.submit(self.codec.compress, msg.decoded())
            self._write_pending()
        return None

    def _write_pending(self, *, drain: bool = False) -> None:
        """Write the pending frames the series lets go (all of them with ``drain``), oldest first."""
        while (received := self.series.next_write(Received.compressed, drain=drain)) is not None:
            job, msg = received.job, received.msg
            t0 = time.time_ns()
            try:
                chunk = job.result() if job is not None else received.chunk
            except Exception as e:  # a codec failure is a recorder failure, with the frame named
                raise RecorderError(f"{self.codec.kind} compression failed at frame {msg.frame_id}: {e}") from e
            if self.series.needs_file:
                self._open_next()
            assert self.file is not None
            if msg.outputs:
                self._check_outputs(msg)
            if received.chunk is not None:
                # only the shape and dtype are needed: the chunk is stored as it came
                array = descriptor(tuple(msg.header["shape"]), np.dtype(msg.header["dtype"]))
                self.counters[Count.CHUNKS_AS_RECEIVED] += 1
            else:
                array = msg.decoded()
            self.file.append(
                array,
                frame_id=msg.frame_id,
                t_acq_ns=msg.header["t_acq_ns"],
                t_recv_ns=received.t_recv_ns,
                chunk=chunk,
                fields=msg.header,
                outputs=msg.arrays if msg.outputs else None,
            )
            self.counters[Count.WRITE_NS] += time.time_ns() - t0
            if not self.sub.release(msg):  # a frame read from the ring: its slot goes back
                self.series.damaged(msg.frame_id)  # rewritten while we read it: possibly torn
            step = self.series.wrote(msg.frame_id, stored_bytes=self.file.stored_bytes)
            now = time.time_ns()
            if self.series.written == 1:
                self.counters[Count.FIRST_NS] = now
                # CPU time of all threads, from the first frame to the end of stream (see _drain):
                # the recorder's own cost, whatever the neighbours' load. Read twice per run only:
                # CLOCK_PROCESS_CPUTIME_ID costs up to milliseconds per call on this VM.
                self.counters[Count.CPU_FIRST_NS] = time.process_time_ns()
            self.counters[Count.WRITTEN] = self.series.written
            self.counters[Count.BYTES] += sum(a.nbytes for a in msg.arrays) if msg.outputs else msg.nbytes
            self.counters[Count.WIRE_BYTES] += msg.wire_bytes
            self._wire.add(msg.nbytes, msg.wire_bytes, as_received=received.chunk is not None)
            self.counters[Count.LAST_NS] = now
            if step is Step.ROTATE:
                self._close_current()  # the next frame opens the next file
            elif step is Step.FLUSH:
                self._flush()

    def _check_outputs(self, msg: Message) -> None:
        """A result's outputs: the first one of the file declares its datasets (before its
        first row), every other must have the same (the sink already refuses others)."""
        assert self.file is not None
        if self.file.outputs is None:
            self.file.set_outputs(msg.outputs)
        elif self.file.outputs != msg.outputs:
            raise RecorderError(f"{self.file.path}: result {msg.frame_id} has other outputs than the file")

    def _finish(self, code: int) -> int:
        """Close the open file and write the ledger into every file of the acquisition."""
        if self.series.pending and self.error is None:
            try:
                self._write_pending(drain=True)  # stopped by a signal: what was received is written
            except RecorderError as e:
                self.log.error("%s", e)
                self.error = str(e)
                code = 1
        self.series.discard_pending()
        try:
            self._close_current()
        except RecorderError as e:
            self.log.error("%s", e)
            self.error = self.error or str(e)
            code = 1
        ledger = self.series.ledger(
            error=self.error,
            rejected=self.counters[Count.REJECTED],
            file_names=[os.path.basename(f.path) for f, _ in self.files],
        )
        if self.series.written == 0 and self.error is None and (self.stopping or ledger.end_reason == "stopped"):
            self._remove_empty(ledger.end_reason)
        if self.error is not None:
            # After a write error (full disk, say) a reopened file would fail to close again
            # and be left flagged "open for writing"; a file without ledger already reads as
            # not complete, and the counts are in the log, the summary and the bye.
            self.log.error("no ledger written into the file(s) after the error above")
        for index, (frame_file, closed_at) in enumerate(self.files if self.error is None else []):
            try:
                attrs = {**ledger.attrs(index), **self._wire.attrs(self.wire_encoding)}
                finalize(frame_file.path, end_time=closed_at or now_iso(), ledger=attrs)
            except RecorderError as e:
                self.log.error("%s", e)
                code = 1
        self.counters[Count.MISSING] = len(ledger.missing_ids)
        self.counters[Count.GAPS] = ledger.dropped_upstream
        self.counters[Count.COMPLETE] = int(ledger.complete)
        self.counters[Count.ACQUISITIONS] += 1
        c = self.counters
        self.log.info(
            "closed %d file(s): written %d, received %d, missing %d, failed %d, dropped upstream %d, rejected %d, "
            "duplicates %d, complete=%s (%s)",
            len(self.files),
            c["written"],
            c["received"],
            c["missing"],
            len(ledger.failed_ids),
            ledger.dropped_upstream,
            c["rejected"],
            c["duplicates"],
            str(ledger.complete).lower(),
            ledger.end_reason,
            extra={
                "event": "files closed",
                "fields": {
                    "files": len(self.files),
                    "written": c["written"],
                    "received": c["received"],
                    "missing": c["missing"],
                    "dropped_upstream": ledger.dropped_upstream,
                    "rejected": c["rejected"],
                    "duplicates": c["duplicates"],
                    "complete": ledger.complete,
                    "end_reason": ledger.end_reason,
                },
            },
        )
        if not ledger.accounted and code == 0 and not self.config.run.serve and not self.stopping:
            # one acquisition: an incomplete file is a failed run (DESIGN: exit 1); stopped by
            # a signal, the operator asked for the end it got (the ledger says `stopped`).
            # Frames the processor failed on are listed, not lost: `framepipe run` exits 1 for
            # them, and this recorder, which wrote every result, is not restarted for them.
            code = 1
        return code

    def _remove_empty(self, reason: str) -> None:
        """An acquisition interrupted before its first frame leaves no file: a file exists
        for every acquisition that wrote frames, and an empty one would only be clutter
        (the files are opened at the start, so a part file can never take an existing name)."""
        for frame_file, _ in self.files:
            try:
                os.remove(frame_file.path)
            except OSError as e:
                self.log.warning("%s: cannot remove the empty file: %s", frame_file.path, e.strerror or e)
                return
        if self.files:
            acq = self.acquisition.acquisition if self.acquisition is not None else "?"
            names = ", ".join(os.path.basename(f.path) for f, _ in self.files)
            self.log.info("acquisition %s %s before its first frame: removed the empty %s", acq, reason, names)
        self.files = []
        self.removed_empty = True

    #: how the frames came: none, or the encoding of the last compressed one
    wire_encoding = "none"

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out[Count.WIRE_ENCODING] = self.wire_encoding
        if self.set_up:
            out[Count.TRANSPORT] = self.sub.transport
        if self.counters[Count.WIRE_BYTES]:
            out[Count.WIRE_RATIO] = round(self.counters[Count.BYTES] / self.counters[Count.WIRE_BYTES], 3)
        if self.files:
            out[Count.PATH] = self.files[-1][0].path.as_posix()
        try:
            out[Count.FILE_BYTES] = os.stat(out[Count.PATH]).st_size
        except (OSError, KeyError):
            pass  # not created yet
        if Count.GAPS not in out:
            out[Count.GAPS] = self.series.sequence.gaps  # live; the final figure is set at close
        return out
