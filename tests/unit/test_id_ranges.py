"""Id ranges and the frame ledger built on them, against plain Python sets (no sockets)."""

from __future__ import annotations

import random

import pytest

from framepipe.core.ledger import FrameLedger, IdRanges, SequenceTracker
from framepipe.wire.protocol import to_ranges


@pytest.mark.parametrize("seed", range(20))
def test_id_ranges_behave_like_a_set(seed: int) -> None:
    rng = random.Random(seed)
    ids = [rng.randrange(300) for _ in range(rng.randrange(1, 400))]
    if seed % 2:
        ids = sorted(ids)  # the common, in-order case
    ranges, plain = IdRanges(), set()
    for i in ids:
        assert ranges.add(i) == (i not in plain)
        plain.add(i)
    assert list(ranges) == sorted(plain) and len(ranges) == len(plain)
    assert ranges.ranges() == to_ranges(sorted(plain))
    assert all((i in ranges) == (i in plain) for i in range(-2, 305))
    other_ids = {rng.randrange(300) for _ in range(150)}
    other = IdRanges(other_ids)
    assert list(ranges.minus(other)) == sorted(plain - other_ids)


def test_a_long_in_order_run_is_one_range() -> None:
    ranges = IdRanges(range(1_000_000))
    assert ranges.ranges() == [[0, 999_999]] and len(ranges) == 1_000_000


def test_ledger_missing_duplicates_unexpected() -> None:
    led = FrameLedger()
    for i in [0, 1, 2, 5, 5, 7, 3]:
        led.add(i)
    assert led.duplicates == 1 and led.received == 6
    assert led.missing() == [4, 6], "holes between the smallest and largest id"
    led.expect(range(10))
    assert led.missing() == [4, 6, 8, 9] and not led.complete()
    assert led.unexpected() == []
    led.add(12)
    assert led.unexpected() == [12]
    s = led.summary()
    assert (s["expected"], s["received"], s["missing"], s["missing_ids"]) == (10, 7, 4, [4, 6, 8, 9])


def test_sequence_tracker_counts_gaps_late_join_and_tail() -> None:
    seq = SequenceTracker()
    for n in [3, 4, 6, 7, 10]:
        seq.see(n)
    assert seq.gaps == 3 + 1 + 2  # joined at 3; 5; 8 and 9
    seq.finish(12)
    assert seq.gaps == 3 + 1 + 2 + 2 and seq.received == 5


@pytest.mark.parametrize("seed", range(10))
def test_from_wire_is_the_union_of_the_pairs(seed: int) -> None:
    rng = random.Random(seed)
    pairs = []
    for _ in range(rng.randrange(0, 30)):
        lo = rng.randrange(200)
        pairs.append([lo, lo + rng.randrange(10)])
    plain = {i for lo, hi in pairs for i in range(lo, hi + 1)}
    ranges = IdRanges.from_wire(pairs)
    assert list(ranges) == sorted(plain) and len(ranges) == len(plain)
    assert ranges.ranges() == to_ranges(sorted(plain)), "merged: sorted, disjoint, not touching"


def test_from_wire_grows_with_the_pairs_not_the_ids() -> None:
    ranges = IdRanges.from_wire([[2**62, 2**63 - 1], [0, 0]])
    assert ranges.ranges() == [[0, 0], [2**62, 2**63 - 1]] and len(ranges) == 2**62 + 1
    assert ranges.difference(IdRanges([0])).ranges() == [[2**62, 2**63 - 1]]


@pytest.mark.parametrize(
    "bad", ["x", None, [[1]], [(1, 2, 3)], [[2, 1]], [[-1, 0]], [[0, 2**63]], [[False, 1]], [[0.0, 1]], [3]]
)
def test_from_wire_refuses_what_is_not_id_ranges(bad: object) -> None:
    with pytest.raises(ValueError):
        IdRanges.from_wire(bad)


def test_from_wire_bounds_the_number_of_pairs() -> None:
    assert len(IdRanges.from_wire([[i * 2, i * 2] for i in range(5)], max_ranges=5)) == 5
    with pytest.raises(ValueError, match="more than 5"):
        IdRanges.from_wire([[i * 2, i * 2] for i in range(6)], max_ranges=5)
