"""RecordingSeries driven directly: rotation, flushes, pending frames and the ledger (no files)."""

from __future__ import annotations

import dataclasses

import pytest

from framepipe.core.series import RecordingSeries, Step
from framepipe.testing.clock import FakeClock


@dataclasses.dataclass
class Item:
    """What a recorder keeps of a received frame; ``ready``: its chunk is compressed."""

    frame_id: int
    ready: bool = True


def is_ready(item: Item) -> bool:
    return item.ready


class Files:
    """The recorder's side, as lists: which file each frame went to, and the steps asked for."""

    def __init__(self, series: RecordingSeries[Item], chunk_bytes: int = 10) -> None:
        self.series = series
        self.chunk_bytes = chunk_bytes
        self.files: list[list[int]] = []
        self.stored = 0
        self.steps: list[Step] = []
        self.flushes = 0

    def open(self) -> None:
        assert self.series.file_index == len(self.files)
        self.files.append([])
        self.stored = 0
        self.series.file_opened()

    def write_ready(self, *, drain: bool = False) -> None:
        while (item := self.series.next_write(is_ready, drain=drain)) is not None:
            if self.series.needs_file:
                self.open()
            self.files[-1].append(item.frame_id)
            self.stored += self.chunk_bytes
            step = self.series.wrote(item.frame_id, stored_bytes=self.stored)
            self.steps.append(step)
            if step is Step.ROTATE:
                self.series.file_closed()
            elif step is Step.FLUSH:
                self.flushes += 1
                self.series.flushed()

    def receive(self, *ids: int) -> None:
        for frame_id in ids:
            self.series.arrive(frame_id, Item(frame_id))
            self.write_ready()


def recording(
    clock: FakeClock | None = None,
    *,
    flush_frames: int = 0,
    flush_s: float = 0.0,
    rotate_frames: int = 0,
    rotate_bytes: int = 0,
) -> Files:
    """A series with its first file open, as the recorder starts one (before the stream)."""
    series: RecordingSeries[Item] = RecordingSeries(
        flush_frames=flush_frames,
        flush_s=flush_s,
        rotate_frames=rotate_frames,
        rotate_bytes=rotate_bytes,
        clock=clock or FakeClock(),
    )
    files = Files(series)
    files.open()
    return files


def test_rotation_exactly_at_the_frame_boundary() -> None:
    rec = recording(rotate_frames=3)
    rec.receive(*range(7))
    assert rec.files == [[0, 1, 2], [3, 4, 5], [6]]
    assert [i for i, step in enumerate(rec.steps) if step is Step.ROTATE] == [2, 5]
    # a stream that ends exactly at a boundary leaves no empty file behind
    rec = recording(rotate_frames=3)
    rec.receive(*range(6))
    assert rec.files == [[0, 1, 2], [3, 4, 5]]
    assert rec.series.needs_file and rec.series.file_index == 2
    ledger = rec.series.ledger(error=None, rejected=0, file_names=["a", "b"])
    assert [ledger.attrs(i)["written_in_file"] for i in (0, 1)] == [3, 3]
    assert [(ledger.attrs(i)["first_frame_id"], ledger.attrs(i)["last_frame_id"]) for i in (0, 1)] == [(0, 2), (3, 5)]


def test_rotation_by_stored_bytes() -> None:
    rec = recording(rotate_bytes=25)
    rec.chunk_bytes = 10
    rec.receive(*range(5))
    assert rec.files == [[0, 1, 2], [3, 4]]  # the frame that reaches 25 bytes is the last of its file


def test_flush_every_n_frames() -> None:
    rec = recording(flush_frames=3)
    rec.receive(*range(7))
    assert [i for i, step in enumerate(rec.steps) if step is Step.FLUSH] == [2, 5]
    assert rec.series.flush_due() is False  # one frame unflushed, below the count


def test_flush_after_flush_s_seconds() -> None:
    clock = FakeClock()
    rec = recording(clock, flush_frames=50, flush_s=0.5)
    rec.receive(0)
    assert rec.steps == [Step.NONE]
    clock.now += 0.49
    assert not rec.series.flush_due()
    clock.now += 0.01
    assert rec.series.flush_due()
    rec.series.flushed()
    assert not rec.series.flush_due()
    clock.now += 10  # time alone is no reason: nothing unflushed
    assert not rec.series.flush_due()


def test_rotation_counts_as_a_flush() -> None:
    clock = FakeClock()
    rec = recording(clock, rotate_frames=2, flush_s=0.5)
    rec.receive(0, 1)
    clock.now += 1
    assert rec.steps == [Step.NONE, Step.ROTATE]
    assert not rec.series.flush_due()  # closing the file flushed it


def test_out_of_order_frames_are_written_in_arrival_order_and_complete() -> None:
    rec = recording()
    rec.receive(0, 2, 1, 4, 3)
    assert rec.files == [[0, 2, 1, 4, 3]]
    rec.series.end_of_stream("complete", None, range(5))
    ledger = rec.series.ledger(error=None, rejected=0, file_names=["f.h5"])
    assert ledger.complete and ledger.missing_ids == []


def test_a_frame_compressed_early_never_overtakes_an_older_one() -> None:
    series: RecordingSeries[Item] = RecordingSeries(max_pending=4, clock=FakeClock())
    slow, fast = Item(0, ready=False), Item(1, ready=True)
    series.arrive(0, slow)
    series.arrive(1, fast)
    assert series.next_write(is_ready) is None  # the oldest is not compressed yet: wait
    slow.ready = True
    assert series.next_write(is_ready) is slow
    assert series.next_write(is_ready) is fast


def test_pending_frames_are_bounded() -> None:
    series: RecordingSeries[Item] = RecordingSeries(max_pending=2, clock=FakeClock())
    for i in range(3):
        series.arrive(i, Item(i, ready=False))
    # over the bound: the oldest goes whether its chunk is ready or not (the caller waits for it)
    first = series.next_write(is_ready)
    assert first is not None and first.frame_id == 0
    assert series.next_write(is_ready) is None and series.pending == 2
    series.arrive(3, Item(3, ready=False))
    # an arrival with the buffer over its bound is refused: nothing queues without limit
    with pytest.raises(OverflowError):
        series.arrive(4, Item(4))
    assert series.pending == 3
    drained = []
    while (item := series.next_write(is_ready, drain=True)) is not None:
        drained.append(item.frame_id)
    assert drained == [1, 2, 3]


def test_duplicates_are_counted_and_written_once() -> None:
    series: RecordingSeries[Item] = RecordingSeries(max_pending=2, clock=FakeClock())
    assert series.arrive(7, Item(7, ready=False))
    assert not series.arrive(7, Item(7))  # still pending
    rec = Files(series)
    rec.write_ready(drain=True)
    assert not series.arrive(7, Item(7))  # already written
    assert rec.files == [[7]]
    assert (series.received, series.duplicates, series.written) == (3, 2, 1)


def test_a_sequence_gap_is_counted_and_its_frame_listed_missing() -> None:
    rec = recording()
    for seq in (0, 1, 3):  # the subscription sees the sequence numbers; seq 2 was dropped
        rec.series.sequence.see(seq)
        rec.receive(seq)
    rec.series.sequence.finish(3)
    rec.series.end_of_stream("complete", None, range(4))
    ledger = rec.series.ledger(error=None, rejected=0, file_names=["f.h5"])
    attrs = ledger.attrs(0)
    assert attrs["dropped_upstream"] == 1
    assert attrs["missing_ids"] == [2] and attrs["missing"] == 1
    assert attrs["expected"] == 4 and attrs["written"] == 3 and attrs["received"] == 3
    assert attrs["complete"] is False


def test_end_of_stream_without_missing_frames_is_complete() -> None:
    rec = recording(rotate_frames=2)
    rec.receive(0, 1, 2)
    rec.series.end_of_stream("complete", 0, [0, 1, 2])
    ledger = rec.series.ledger(error=None, rejected=1, file_names=["a.h5", "b.h5"])
    for index in (0, 1):  # every file carries the whole series' ledger
        attrs = ledger.attrs(index)
        assert attrs["complete"] is True and attrs["end_of_stream"] is True
        assert attrs["end_reason"] == "complete" and attrs["camera_lost"] == 0
        assert attrs["missing_ids"] == [] and attrs["rejected"] == 1
        assert attrs["files"] == ["a.h5", "b.h5"] and attrs["file_index"] == index
    assert ledger.attrs(1)["written_in_file"] == 1


def test_end_of_stream_with_a_missing_tail_is_not_complete() -> None:
    rec = recording()
    rec.receive(0, 1, 2)
    rec.series.end_of_stream("complete", None, range(5))
    ledger = rec.series.ledger(error=None, rejected=0, file_names=["f.h5"])
    assert not ledger.complete and ledger.missing_ids == [3, 4]
    assert "camera_lost" not in ledger.attrs(0)  # the results stream carries none


def test_without_end_of_stream_missing_are_the_holes_and_never_complete() -> None:
    rec = recording()
    rec.receive(0, 1, 4)
    ledger = rec.series.ledger(error=None, rejected=0, file_names=["f.h5"])
    assert not ledger.complete and not ledger.end_of_stream
    assert ledger.end_reason == "stopped" and ledger.expected is None
    assert ledger.missing_ids == [2, 3]
    # nothing missing and still not complete: the stream never said what it carried
    rec = recording()
    rec.receive(0, 1)
    assert not rec.series.ledger(error=None, rejected=0, file_names=["f.h5"]).complete


def test_an_error_is_never_complete() -> None:
    rec = recording()
    rec.receive(0)
    rec.series.end_of_stream("complete", None, [0])
    ledger = rec.series.ledger(error="disk full", rejected=0, file_names=["f.h5"])
    assert not ledger.complete and ledger.error == "disk full"
    stopped = recording()
    stopped.receive(0)
    assert stopped.series.ledger(error="disk full", rejected=0, file_names=["f.h5"]).end_reason == "error"


def test_a_malformed_frame_list_leaves_the_holes_as_missing() -> None:
    rec = recording()
    rec.receive(0, 2)
    rec.series.end_of_stream("complete", None, None)
    ledger = rec.series.ledger(error=None, rejected=1, file_names=["f.h5"])
    assert ledger.end_of_stream and ledger.expected is None
    assert ledger.missing_ids == [1] and not ledger.complete


def test_a_frame_read_from_a_rewritten_slot_is_written_listed_as_damaged_and_never_complete() -> None:
    """Every frame is in the file, but one was read from a shared-memory slot that was
    rewritten meanwhile: the ledger names it and the series is not complete."""
    rec = recording()
    rec.receive(0, 1, 2)
    rec.series.damaged(1)
    rec.series.end_of_stream("complete", 0, [0, 1, 2])
    ledger = rec.series.ledger(error=None, rejected=1, file_names=["a.h5"])
    assert ledger.missing_ids == [] and ledger.written == 3
    attrs = ledger.attrs(0)
    assert attrs["complete"] is False and attrs["damaged"] == 1 and attrs["damaged_ids"] == [1]
    clean = recording()
    clean.receive(0, 1)
    clean.series.end_of_stream("complete", 0, [0, 1])
    assert "damaged_ids" not in clean.series.ledger(error=None, rejected=0, file_names=["b.h5"]).attrs(0)
