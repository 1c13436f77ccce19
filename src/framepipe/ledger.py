"""The frame ledger: which frame ids arrived, which are missing, which came twice.

Every stage that must account for frames keeps one: the sink (exactly-once work), the
recorders (what a file holds), subscribers (sequence gaps on a broadcast stream).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any


class FrameLedger:
    """Frame ids received, with duplicates counted.

    ``expect(ids)`` records what should arrive; ``missing()`` is what was expected and
    did not. Memory is one Python int per frame id seen (ids are kept as a set), which is
    small next to the frames themselves.
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self._expected: set[int] | None = None
        self.duplicates = 0

    def add(self, frame_id: int) -> bool:
        """Record a frame id; False (and a duplicate counted) if it was seen before."""
        if frame_id in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(frame_id)
        return True

    def ids(self) -> list[int]:
        """Every id received, sorted."""
        return sorted(self._seen)

    def __contains__(self, frame_id: int) -> bool:
        return frame_id in self._seen

    def expect(self, ids: Iterable[int]) -> None:
        if self._expected is None:
            self._expected = set()
        self._expected.update(ids)

    @property
    def received(self) -> int:
        return len(self._seen)

    @property
    def expected(self) -> int | None:
        return None if self._expected is None else len(self._expected)

    def missing(self) -> list[int]:
        """Expected ids not received, sorted; without an expectation, the holes between
        the smallest and largest id seen."""
        if self._expected is not None:
            return sorted(self._expected - self._seen)
        if not self._seen:
            return []
        lo, hi = min(self._seen), max(self._seen)
        return sorted(set(range(lo, hi + 1)) - self._seen)

    def unexpected(self) -> list[int]:
        if self._expected is None:
            return []
        return sorted(self._seen - self._expected)

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

    def finish(self, final_seq: int | None) -> None:
        """At end of stream: messages after the last one received count as gaps too."""
        if final_seq is None:
            return
        if self.last is None:
            self.gaps += final_seq + 1
        elif final_seq > self.last:
            self.gaps += final_seq - self.last
        self.last = final_seq
