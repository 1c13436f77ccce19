from __future__ import annotations

from framepipe.core.ledger import FrameLedger, SequenceTracker


def test_ledger_counts_missing_and_duplicates() -> None:
    led = FrameLedger()
    for fid in (0, 1, 1, 3, 5, 5, 5):
        led.add(fid)
    assert led.received == 4 and led.duplicates == 3
    assert led.missing() == [2, 4]  # holes, without an expectation
    led.expect(range(8))
    assert led.missing() == [2, 4, 6, 7]
    assert not led.complete()
    assert led.summary()["missing_ids"] == [2, 4, 6, 7]


def test_sequence_gaps_join_late_and_tail() -> None:
    seq = SequenceTracker()
    assert seq.see(3) == 3  # joined late: 0..2 not received
    assert seq.see(4) == 0
    assert seq.see(8) == 3
    seq.finish(10)  # 9 and 10 never arrived
    assert seq.gaps == 8 and seq.received == 3
    seq.see(0)
    assert seq.restarts == 1
