"""The frame ledger: which frame ids arrived, which are missing, which came twice.

Every stage that must account for frames keeps one: the sink (exactly-once work), the
recorders (what a file holds), subscribers (sequence gaps on a broadcast stream).
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

#: frame ids are below this: they fill int64 columns in files and headers
ID_LIMIT = 1 << 63


class IdRanges:
    """A set of non-negative frame ids kept as sorted, disjoint, inclusive ranges.

    Frame ids arrive mostly in order, so a run of a million frames with a few holes is a
    handful of ranges: memory grows with the number of holes, not with the run length
    (a Python ``set`` costs ~60 bytes per id: 60 MB per million frames). Adding the next
    id in sequence is O(1); an id out of order costs a bisect and a list insert.
    """

    __slots__ = ("_count", "_his", "_los")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        self._count = 0
        for i in ids:
            self.add(i)

    @classmethod
    def from_wire(cls, ranges: object, *, max_ranges: int = 1_000_000) -> IdRanges:
        """The ids of inclusive ``[lo, hi]`` pairs as they came from the network, without
        expanding them: time and memory grow with the number of pairs, never with the ids.

        Each pair must be two ints with ``0 <= lo <= hi < 2**63`` (ids fill int64 columns);
        unsorted, overlapping or touching pairs are merged. ValueError for anything else,
        or for more than ``max_ranges`` pairs.
        """
        if not isinstance(ranges, list | tuple):
            raise ValueError("ranges must be a list")
        if len(ranges) > max_ranges:
            raise ValueError(f"more than {max_ranges} ranges")
        pairs: list[tuple[int, int]] = []
        for item in ranges:
            if not isinstance(item, list | tuple) or len(item) != 2:
                raise ValueError(f"not a [lo, hi] pair: {item!r:.40}")
            lo, hi = item
            if type(lo) is not int or type(hi) is not int:  # not bool, not float
                raise ValueError(f"not a pair of ints: {item!r:.40}")
            if not 0 <= lo <= hi < ID_LIMIT:
                raise ValueError(f"not a range of frame ids: {item!r:.60}")
            pairs.append((lo, hi))
        pairs.sort()  # linear when already sorted, as to_ranges sends them
        out = cls()
        los, his = out._los, out._his
        for lo, hi in pairs:
            if his and lo <= his[-1] + 1:  # overlaps or touches the last range
                if hi > his[-1]:
                    out._count += hi - his[-1]
                    his[-1] = hi
            else:
                los.append(lo)
                his.append(hi)
                out._count += hi - lo + 1
        return out

    def add(self, i: int) -> bool:
        """Add ``i``; False if it was already there."""
        los, his = self._los, self._his
        if his and i == his[-1] + 1:  # the common case: the next id in sequence
            his[-1] = i
            self._count += 1
            return True
        k = bisect.bisect_right(los, i)  # ranges[k-1] starts at or before i
        if k and i <= his[k - 1]:
            return False
        joins_left = k > 0 and his[k - 1] == i - 1
        joins_right = k < len(los) and los[k] == i + 1
        if joins_left and joins_right:
            his[k - 1] = his[k]
            del los[k], his[k]
        elif joins_left:
            his[k - 1] = i
        elif joins_right:
            los[k] = i
        else:
            los.insert(k, i)
            his.insert(k, i)
        self._count += 1
        return True

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int):
            return False
        k = bisect.bisect_right(self._los, i)
        return k > 0 and i <= self._his[k - 1]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for lo, hi in zip(self._los, self._his, strict=True):
            yield from range(lo, hi + 1)

    def ranges(self) -> list[list[int]]:
        """Inclusive [lo, hi] ranges, the wire form of :func:`framepipe.protocol.to_ranges`."""
        return [[lo, hi] for lo, hi in zip(self._los, self._his, strict=True)]

    def bounds(self) -> tuple[int, int] | None:
        return (self._los[0], self._his[-1]) if self._los else None

    def minus(self, other: IdRanges) -> Iterator[int]:
        """Ids here and not in ``other``, in order (walks both range lists once)."""
        olos, ohis = other._los, other._his
        j = 0
        for lo, hi in zip(self._los, self._his, strict=True):
            i = lo
            while i <= hi:
                while j < len(olos) and ohis[j] < i:
                    j += 1
                if j < len(olos) and olos[j] <= i:
                    i = ohis[j] + 1  # covered by other: skip its range
                    continue
                stop = hi if j >= len(olos) else min(hi, olos[j] - 1)
                yield from range(i, stop + 1)
                i = stop + 1

    def difference(self, other: IdRanges) -> IdRanges:
        """Ids here and not in ``other``, as ranges: time and memory grow with the number of
        ranges, not with the ids' values (unlike :meth:`minus`, which yields every id)."""
        out = IdRanges()
        olos, ohis = other._los, other._his
        j = 0
        for lo, hi in zip(self._los, self._his, strict=True):
            while j < len(olos) and ohis[j] < lo:
                j += 1
            i = lo
            k = j
            while k < len(olos) and olos[k] <= hi:
                if olos[k] > i:
                    out._append(i, olos[k] - 1)
                i = ohis[k] + 1
                k += 1
            if i <= hi:
                out._append(i, hi)
        return out

    def _append(self, lo: int, hi: int) -> None:
        # pieces of a difference come in order and never touch (ranges here never do)
        self._los.append(lo)
        self._his.append(hi)
        self._count += hi - lo + 1


class FrameLedger:
    """Frame ids received, with duplicates counted.

    ``expect(ids)`` records what should arrive; ``missing()`` is what was expected and
    did not. Ids are kept as ranges (:class:`IdRanges`): memory grows with the number of
    holes and out-of-order stretches, not with the number of frames.
    """

    def __init__(self) -> None:
        self._seen = IdRanges()
        self._expected: IdRanges | None = None
        self.duplicates = 0

    def add(self, frame_id: int) -> bool:
        """Record a frame id; False (and a duplicate counted) if it was seen before."""
        if not self._seen.add(frame_id):
            self.duplicates += 1
            return False
        return True

    def ids(self) -> list[int]:
        """Every id received, sorted."""
        return list(self._seen)

    def ranges(self) -> list[list[int]]:
        """Every id received, as inclusive ranges."""
        return self._seen.ranges()

    def __contains__(self, frame_id: int) -> bool:
        return frame_id in self._seen

    def expect(self, ids: Iterable[int]) -> None:
        if self._expected is None:
            self._expected = IdRanges()
        for i in ids:
            self._expected.add(i)

    @property
    def received(self) -> int:
        return len(self._seen)

    @property
    def expected(self) -> int | None:
        return None if self._expected is None else len(self._expected)

    def expected_ids(self) -> IdRanges:
        """The ids expected (empty before ``expect``)."""
        return IdRanges() if self._expected is None else self._expected

    def missing(self) -> list[int]:
        """Expected ids not received, sorted; without an expectation, the holes between
        the smallest and largest id seen."""
        if self._expected is not None:
            return list(self._expected.minus(self._seen))
        bounds = self._seen.bounds()
        if bounds is None:
            return []
        return list(_span(*bounds).minus(self._seen))

    def missing_ranges(self) -> IdRanges:
        """What :meth:`missing` lists, as ranges: its size grows with the holes, not with
        the ids' values (one stray huge id must not cost memory in proportion to it)."""
        if self._expected is not None:
            return self._expected.difference(self._seen)
        bounds = self._seen.bounds()
        if bounds is None:
            return IdRanges()
        return _span(*bounds).difference(self._seen)

    def unexpected(self) -> list[int]:
        if self._expected is None:
            return []
        return list(self._seen.minus(self._expected))

    def complete(self) -> bool:
        return not self.missing()

    def summary(self) -> dict[str, Any]:
        missing = self.missing()
        return {
            "expected": self.expected,
            "received": self.received,
            "missing": len(missing),
            "duplicates": self.duplicates,
            "missing_ids": missing[:1000],
        }


def _span(lo: int, hi: int) -> IdRanges:
    """All ids lo..hi as one range (empty if hi < lo)."""
    out = IdRanges()
    if hi >= lo:
        out._los.append(lo)
        out._his.append(hi)
        out._count = hi - lo + 1
    return out


@dataclasses.dataclass
class SequenceTracker:
    """Counts gaps in a broadcast stream's sequence numbers (PUB drops at its HWM by design)."""

    last: int | None = None
    received: int = 0
    gaps: int = 0
    """Messages skipped in the sequence: frames this subscriber did not get."""
    restarts: int = 0
    """Times the sequence went backwards (the publisher restarted)."""

    def see(self, seq: int) -> int:
        """Record a sequence number; return how many messages were skipped before it."""
        self.received += 1
        skipped = 0
        if self.last is not None:
            if seq > self.last + 1:
                skipped = seq - self.last - 1
            elif seq <= self.last:
                self.restarts += 1
        elif seq > 0:
            # joined late: the frames before the first one seen were not received either
            skipped = seq
        self.gaps += skipped
        self.last = seq
        return skipped

    def start_at(self, seq: int) -> None:
        """An acquisition starts (or we joined one): its first message has sequence ``seq``,
        so none before it counts as a gap."""
        self.last = seq - 1 if seq > 0 else None

    def finish(self, final_seq: int | None) -> None:
        """At end of stream: messages after the last one received count as gaps too."""
        if final_seq is None:
            return
        if self.last is None:
            self.gaps += final_seq + 1
        elif final_seq > self.last:
            self.gaps += final_seq - self.last
        self.last = final_seq
