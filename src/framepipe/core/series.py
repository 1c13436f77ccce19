"""A recorder's series of files, as decisions: no sockets, no files, an injected clock.

:class:`RecordingSeries` decides what a recorder does with each frame of its stream; the
recorder (``framepipe.subscribers.recorder``) feeds it what arrives and does the HDF5 work
it asks for (``framepipe.storage.h5file``):

- **pending frames**: a bounded buffer of frames received and not yet written (their chunks
  are being compressed on a thread pool); written in arrival order, the oldest first, so a
  chunk that finishes early never overtakes an older frame. Duplicates (an id written or
  pending already) are counted, never written twice.
- **rotation**: which file of the series a frame goes to; a file ends after ``rotate_frames``
  frames or ``rotate_bytes`` stored bytes, and the next frame opens the next one (so a
  stream that ends exactly at a boundary leaves no empty file behind).
- **flushes**: every ``flush_frames`` frames or ``flush_s`` seconds, whichever comes first.
- **the ledger** at the end: the ids written against those the end of stream lists, the
  counts, sequence gaps (messages published and never received) and ``complete``.

The file layout these decisions produce is docs/hdf5-layout.md.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from framepipe.core.ledger import FrameLedger, IdRanges, SequenceTracker

T = TypeVar("T")

#: the end reason of an acquisition whose source went silent: what it produced is unknown,
#: so nothing that ends this way is complete
UPSTREAM_LOST = "upstream lost"


@dataclasses.dataclass(frozen=True, slots=True)
class EndNotice:
    """What the stream's end of stream said: why it ended, and (frames stream) the frames
    the camera itself lost before publishing."""

    reason: str | None
    camera_lost: int | None


class Step(enum.Enum):
    """What the recorder does after writing a frame."""

    NONE = "none"
    FLUSH = "flush"
    """Flush the open file: SWMR readers see the new frames, a ``kill -9`` keeps them."""
    ROTATE = "rotate"
    """Close the open file; the next frame opens the next file of the series."""


@dataclasses.dataclass
class FileShare:
    """One file's share of the series: its index, frames written, first and last frame id."""

    index: int
    written: int = 0
    first_id: int | None = None
    last_id: int | None = None


@dataclasses.dataclass(frozen=True)
class SeriesLedger:
    """What the series says at its end; :meth:`attrs` is the ``/entry/ledger`` of one file."""

    complete: bool
    #: every frame the stream carried is written or listed as failed: complete but for
    #: the processor's failures (the recorder did its part)
    accounted: bool
    end_of_stream: bool
    end_reason: str
    error: str
    expected: int | None
    received: int
    written: int
    missing_ids: list[int]
    #: results: frames the processor failed on (in the stream, with no outputs to write)
    failed_ids: list[int]
    #: written from a shared-memory slot rewritten while it was read (possibly torn)
    damaged_ids: list[int]
    first_failure: str
    dropped_upstream: int
    rejected: int
    duplicates: int
    file_names: list[str]
    camera_lost: int | None
    files: list[FileShare]

    def attrs(self, index: int) -> dict[str, Any]:
        """The ledger written into file ``index``: the whole series' ledger, then its own share
        (every file gets the whole series', so any one file tells whether the run is complete)."""
        ledger: dict[str, Any] = {
            "complete": self.complete,
            "end_of_stream": self.end_of_stream,
            "end_reason": self.end_reason,
            "error": self.error,
            "expected": self.expected,
            "received": self.received,
            "written": self.written,
            "missing": len(self.missing_ids),
            "dropped_upstream": self.dropped_upstream,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "files": self.file_names,
            "missing_ids": self.missing_ids,
        }
        if self.failed_ids or self.first_failure:
            ledger.update(failed=len(self.failed_ids), failed_ids=self.failed_ids, first_failure=self.first_failure)
        if self.damaged_ids:
            ledger.update(damaged=len(self.damaged_ids), damaged_ids=self.damaged_ids)
        if self.camera_lost is not None:
            ledger["camera_lost"] = self.camera_lost
        share = self.files[index]
        return {
            **ledger,
            "file_index": index,
            "written_in_file": share.written,
            "first_frame_id": -1 if share.first_id is None else share.first_id,
            "last_frame_id": -1 if share.last_id is None else share.last_id,
        }


class RecordingSeries(Generic[T]):
    """The decisions of one recording: pending frames, rotation, flushes and the ledger.

    ``T`` is what the recorder keeps of a received frame until it is written (its message,
    its compression job, its arrival time); the series only holds it, in arrival order.

    The recorder's part, per frame: :meth:`arrive` when it is received; then, while
    :meth:`next_write` gives a frame: open the next file if :attr:`needs_file` (and say so
    with :meth:`file_opened`), append the frame, tell :meth:`wrote` and do the step it
    returns. Between frames it flushes when :meth:`flush_due`. At the end
    :meth:`end_of_stream` (if the stream ended) and :meth:`ledger`.
    """

    def __init__(
        self,
        *,
        flush_frames: int = 0,
        flush_s: float = 0.0,
        rotate_frames: int = 0,
        rotate_bytes: int = 0,
        max_pending: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.flush_frames = flush_frames
        self.flush_s = flush_s
        self.rotate_frames = rotate_frames
        self.rotate_bytes = rotate_bytes
        #: frames held before the oldest must be written whether its chunk is ready or not
        #: (memory: this many received frames)
        self.max_pending = max_pending
        self.clock = clock
        #: frame ids written (what the files hold)
        self.written_ids = FrameLedger()
        #: the stream's sequence numbers: the subscription counts gaps into it
        self.sequence = SequenceTracker()
        #: the files opened so far, in order (a rotation's next file is opened by its first frame)
        self.files: list[FileShare] = []
        self.received = 0
        self.duplicates = 0
        #: results the processor failed on (listed apart from the missing ones)
        self.failed_ids = IdRanges()
        self.first_failure = ""
        #: frames written from a shared-memory slot that was rewritten while it was read:
        #: in the file, but what was read may be torn (never ``complete``)
        self.damaged_ids = IdRanges()
        self._pending: collections.deque[tuple[int, T]] = collections.deque()
        self._pending_ids: set[int] = set()
        self._open = False
        self._unflushed = 0
        self._flushed_at = clock()
        self._eos: EndNotice | None = None
        self._source_known = False
        #: frame ids an earlier part of this acquisition holds (a recorder that restarted
        #: mid-acquisition): not missing, though not in this part
        self.earlier_parts = IdRanges()

    # ------------------------------------------------------------------ arrivals
    def arrive(self, frame_id: int, item: T) -> bool:
        """A data message arrived; False for a duplicate (counted, not to be written).

        The caller writes what :meth:`next_write` gives after each arrival, so the buffer
        never holds more than ``max_pending`` frames before an arrival.
        """
        if len(self._pending) > self.max_pending:
            # an unbounded buffer would hold every frame of a slow disk's backlog in memory
            raise OverflowError(f"{len(self._pending)} frames pending (bound {self.max_pending}): write first")
        self.received += 1
        if frame_id in self.written_ids or frame_id in self._pending_ids:
            self.duplicates += 1
            return False
        self._pending.append((frame_id, item))
        self._pending_ids.add(frame_id)
        return True

    def failed(self, frame_id: int, reason: str) -> bool:
        """A result saying the processor failed on ``frame_id``; False for a duplicate."""
        self.received += 1
        if frame_id in self.failed_ids or frame_id in self.written_ids or frame_id in self._pending_ids:
            self.duplicates += 1
            return False
        self.failed_ids.add(frame_id)
        self.first_failure = self.first_failure or reason
        return True

    def damaged(self, frame_id: int) -> None:
        """Frame ``frame_id`` was written, but its slot was rewritten while it was read: the
        file holds it, possibly torn. The ledger lists it and the series is not complete."""
        self.damaged_ids.add(frame_id)

    @property
    def pending(self) -> int:
        """Frames received and not written yet."""
        return len(self._pending)

    def next_write(self, ready: Callable[[T], bool], *, drain: bool = False) -> T | None:
        """The next frame to write, oldest first, or None to wait.

        The oldest goes when ``ready(item)`` (its chunk is compressed), when more than
        ``max_pending`` frames are held (the caller then waits for its chunk), or with
        ``drain`` (nothing else to do, end of stream, stop: write everything). A younger
        frame never goes first: rows are in arrival order.
        """
        if not self._pending:
            return None
        frame_id, item = self._pending[0]
        if not (drain or len(self._pending) > self.max_pending or ready(item)):
            return None
        self._pending.popleft()
        self._pending_ids.discard(frame_id)
        return item

    def discard_pending(self) -> None:
        """Forget the frames not written (after a write error nothing more is written)."""
        self._pending.clear()
        self._pending_ids.clear()

    # ------------------------------------------------------------------ files
    @property
    def needs_file(self) -> bool:
        """No file is open: the next frame opens the next file of the series."""
        return not self._open

    @property
    def file_index(self) -> int:
        """Index of the file the next frame goes to (the next file to open if none is)."""
        return len(self.files) - 1 if self._open else len(self.files)

    def file_opened(self) -> int:
        """The recorder opened the file :attr:`file_index`; returns its index."""
        if self._open:
            raise RuntimeError(f"file {len(self.files) - 1} of the series is still open")
        self.files.append(FileShare(len(self.files)))
        self._open = True
        return len(self.files) - 1

    def file_closed(self) -> None:
        """The open file was closed (rotation, end, error); closing flushed it."""
        self._open = False
        self._unflushed = 0

    def wrote(self, frame_id: int, *, stored_bytes: int) -> Step:
        """Frame ``frame_id`` is in the open file, which now holds ``stored_bytes`` of frames.

        Returns :attr:`Step.ROTATE` when this frame ends the file (the caller closes it and
        calls :meth:`file_closed`), else :attr:`Step.FLUSH` when a flush is due.
        """
        if not self._open:
            raise RuntimeError(f"frame {frame_id} written with no file open")
        share = self.files[-1]
        share.written += 1
        if share.first_id is None:
            share.first_id = frame_id
        share.last_id = frame_id
        self.written_ids.add(frame_id)
        self._unflushed += 1
        if (self.rotate_frames and share.written >= self.rotate_frames) or (
            self.rotate_bytes and stored_bytes >= self.rotate_bytes
        ):
            return Step.ROTATE
        return Step.FLUSH if self.flush_due() else Step.NONE

    @property
    def written(self) -> int:
        """Frames written over the whole series."""
        return self.written_ids.received

    # ------------------------------------------------------------------ flushes
    def flush_due(self) -> bool:
        """Frames are unflushed and ``flush_frames`` of them, or ``flush_s`` seconds, have passed."""
        if not self._unflushed:
            return False
        return bool(
            (self.flush_frames and self._unflushed >= self.flush_frames)
            or (self.flush_s and self.clock() - self._flushed_at >= self.flush_s)
        )

    def flushed(self) -> None:
        """The open file was flushed: the count and the time start again."""
        self._unflushed = 0
        self._flushed_at = self.clock()

    # ------------------------------------------------------------------ the end
    def end_of_stream(self, reason: str | None, camera_lost: int | None, frame_ids: Iterable[int] | None) -> None:
        """The stream ended: why, the frames the camera itself lost, and every frame id it
        carried (None if its list was malformed: then the missing ids are the holes between
        the ids written, as without an end of stream)."""
        self._eos = EndNotice(reason, camera_lost)
        self._source_known = frame_ids is not None and reason != UPSTREAM_LOST
        if frame_ids is not None:
            self.written_ids.expect(frame_ids)

    def abandon(self, reason: str) -> None:
        """The stream went silent before its end: the series ends with ``reason``, not
        complete (what the source produced is unknown)."""
        self._eos = EndNotice(reason, None)
        self._source_known = False

    def ledger(self, *, error: str | None, rejected: int, file_names: Sequence[str]) -> SeriesLedger:
        """The ledger of the series as it ends now, ``error`` the recorder's (None if none).

        ``complete``: the files hold every frame the stream says it carried. Why the stream
        ended (a camera error, a stop) is ``end_reason``'s business, not complete's.
        """
        eos = self._eos
        failed = self.failed_ids
        missing = [i for i in self.written_ids.missing() if i not in failed]
        if len(self.earlier_parts):
            missing = [i for i in missing if i not in self.earlier_parts]
        reason = eos.reason if eos is not None else None
        accounted = eos is not None and self._source_known and not missing and error is None
        return SeriesLedger(
            # complete only against the source's own list of what it produced
            complete=accounted and not failed and not self.damaged_ids,
            accounted=accounted,
            end_of_stream=eos is not None,
            end_reason=reason if reason is not None else ("stopped" if error is None else "error"),
            error=error or "",
            expected=self.written_ids.expected,
            received=self.received,
            written=self.written,
            missing_ids=missing,
            failed_ids=list(failed),
            damaged_ids=list(self.damaged_ids),
            first_failure=self.first_failure,
            dropped_upstream=self.sequence.gaps,
            rejected=rejected,
            duplicates=self.duplicates,
            file_names=list(file_names),
            # the frames stream only: frames the camera lost before publishing
            camera_lost=eos.camera_lost if eos is not None else None,
            files=[dataclasses.replace(share) for share in self.files],
        )
