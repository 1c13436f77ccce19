"""The sink's decisions, with no sockets: which results are new, when acks go out, when a run
may end, which workers are alive.

:class:`ResultAccounting` keeps the frame ledger of the work stream: a result for a frame id
seen before is a duplicate (a re-dispatched frame, or a hung worker's late answer), dropped
and acknowledged again; acknowledgements are batched; the ventilator's end of stream (the ids
it accepted, and those it still waits an ack for) says what is missing and when the sink may
finish. :class:`WorkerLiveness` turns results and heartbeats into who is alive and who timed
out. The sink (``framepipe.sink``) is the loop that feeds them messages and sends what they
say. Both take a ``clock`` (monotonic seconds), so tests drive them in milliseconds.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from framepipe.core.counters import Count
from framepipe.core.ledger import FrameLedger, IdRanges

#: acks go out when a batch is full (a quarter of the window, at most this many) or due
#: (ACK_INTERVAL_S after the last send); the sink's poll wakes when they are due, so an idle
#: sink never sits on acks the ventilator's window is waiting for
ACK_BATCH = 64
#: longest an acknowledgement is held back to batch it with others
ACK_INTERVAL_S = 0.02
#: how often the list of live workers is announced (at once when one joins or is lost)
WORKERS_INTERVAL_S = 0.5
#: at start, how long after the first worker the sink waits for the rest of workers.count
POOL_GRACE_S = 2.0
#: latency samples kept for the percentiles in the summary (a bound, not a window)
LATENCY_SAMPLES = 100_000
#: missing ids listed in a summary (the count is always exact)
SUMMARY_IDS = 1000
#: the end reason of an acquisition whose every frame was accounted for, some as failed
FAILED_FRAMES = "failed frames"
#: worker names tracked at once: heartbeats from more (a flood of made-up names) are ignored
MAX_WORKERS = 4096


def ack_batch_size(window: int) -> int:
    """Acks per batch for a ventilator ``window``: it stops sending when ``window`` frames are
    unacknowledged, so a batch must fill long before that: a quarter of it (at most ACK_BATCH)."""
    return max(1, min(ACK_BATCH, window // 4))


class ResultAccounting:
    """Every result of the work stream accounted for exactly once, and acknowledged.

    ``counters`` is where the counts go (``received``, ``duplicates``, ``bytes``,
    ``first_ns``, ``last_ns``): the sink passes its component counters, which its summary
    and status rates report. Ids are kept as ranges: memory grows with the holes, not with
    the number of frames or the ids' values.
    """

    def __init__(
        self,
        *,
        window: int,
        finish_timeout_s: float,
        clock: Callable[[], float],
        counters: collections.Counter[str] | None = None,
    ) -> None:
        self.clock = clock
        self.counters: collections.Counter[str] = collections.Counter() if counters is None else counters
        self.ledger = FrameLedger()
        self.per_worker: dict[str, int] = {}
        self.ack_batch = ack_batch_size(window)
        #: when held acks go out even if the batch is not full (set at each send)
        self.ack_due = 0.0
        self._finish_timeout_s = finish_timeout_s
        self._acks = IdRanges()
        self._acks_held = 0  # results acknowledged in the held batch, duplicates included
        self._accepted: IdRanges | None = None
        self._acked_by_ventilator = IdRanges()
        self._deadline = 0.0
        self._latency_ns: list[int] = []
        #: frames the processor failed on: accounted for (not missing), listed apart
        self.failed = IdRanges()
        #: the first failure's text, for the log and the summary
        self.first_failure: str | None = None

    # ---------------------------------------------------------------- results
    def result(
        self,
        frame_id: int,
        worker: str,
        *,
        t_sink_ns: int,
        t_acq_ns: int | None = None,
        nbytes: int = 0,
        failed: str | None = None,
    ) -> bool:
        """Account for a result; True when it is new (to be forwarded), False for a duplicate.

        Both are acknowledged: the ack of the first copy may have been lost (acks ride on
        PUB), and an unacknowledged frame would be re-dispatched again and again. A result
        that says the processor ``failed`` on the frame is received (not missing) and listed
        among :attr:`failed`: re-running a deterministic processor would fail again.
        """
        self._acks.add(frame_id)
        self._acks_held += 1
        if not self.ledger.add(frame_id):
            self.counters[Count.DUPLICATES] += 1
            return False
        if self.ledger.received == 1:
            self.counters[Count.FIRST_NS] = t_sink_ns
        self.counters[Count.LAST_NS] = t_sink_ns
        self.counters[Count.RECEIVED] += 1
        if failed is not None:
            self.failed.add(frame_id)
            self.counters[Count.FAILED] += 1
            if self.first_failure is None:
                self.first_failure = failed
        self.counters[Count.BYTES] += nbytes
        self.per_worker[worker] = self.per_worker.get(worker, 0) + 1
        if t_acq_ns is not None and len(self._latency_ns) < LATENCY_SAMPLES:
            self._latency_ns.append(t_sink_ns - t_acq_ns)
        return True

    @property
    def acks_held(self) -> bool:
        """Acknowledgements are waiting to be sent."""
        return self._acks_held > 0

    def acks_due_in_s(self) -> float | None:
        """Seconds until the held acks are due (0: now); None when none are held."""
        if not self._acks_held:
            return None
        return max(0.0, self.ack_due - self.clock())

    def take_acks(self, force: bool = False) -> list[list[int]] | None:
        """The held acks as id ranges, if they go now: ``force``, a full batch, or due."""
        if not self._acks_held:
            return None
        now = self.clock()
        if not force and self._acks_held < self.ack_batch and now < self.ack_due:
            return None
        ranges = self._acks.ranges()
        self._acks = IdRanges()
        self._acks_held = 0
        self.ack_due = now + ACK_INTERVAL_S
        return ranges

    # ---------------------------------------------------------------- end of stream
    def end_of_stream(
        self, frame_ids: Iterable[int], unacknowledged: Iterable[int], source_ids: Iterable[int] | None = None
    ) -> None:
        """The ventilator's end of stream: the ids it accepted, those of them it had no ack
        for, and what the publisher said the camera produced (``source_ids``: the reference,
        so ids a restarted ventilator never saw are missing, not forgotten). Accepted and
        acknowledged, yet not received here: a sink before a restart received them
        (acknowledged elsewhere), they are not waited for."""
        accepted = IdRanges(frame_ids)
        self.ledger.expect(accepted if source_ids is None else IdRanges(source_ids))
        self._accepted = accepted
        self._acked_by_ventilator = accepted.difference(IdRanges(unacknowledged))
        self._deadline = self.clock() + self._finish_timeout_s

    @property
    def ended(self) -> bool:
        """The ventilator's end of stream arrived."""
        return self._accepted is not None

    def accepted_ids(self) -> list[int]:
        """The ids the results stream should have carried: what the source produced (empty
        before the end of stream)."""
        return [] if self._accepted is None else list(self.ledger.expected_ids())

    def _outstanding(self) -> tuple[IdRanges, IdRanges]:
        """Not received here, split in (missing, acknowledged elsewhere). Before the end of
        stream, the holes between the smallest and largest id received count as missing."""
        absent = self.ledger.missing_ranges()
        missing = absent.difference(self._acked_by_ventilator)
        return missing, absent.difference(missing)

    def missing(self) -> IdRanges:
        """Expected, and neither received here nor acknowledged by an earlier sink."""
        return self._outstanding()[0]

    def acknowledged_elsewhere(self) -> IdRanges:
        """Expected, not received here, acknowledged by an earlier sink (before a restart)."""
        return self._outstanding()[1]

    def may_finish(self) -> bool:
        """After the end of stream: nothing is missing any more, or the finish timeout passed."""
        if self._accepted is None:
            return False
        return not self.missing() or self.clock() >= self._deadline

    def done(self) -> dict[str, int]:
        """The counts the sink's ``done`` reply gives the ventilator."""
        missing, elsewhere = self._outstanding()
        return {
            Count.RECEIVED: self.ledger.received,
            Count.MISSING: len(missing),
            Count.DUPLICATES: self.ledger.duplicates,
            Count.ACKNOWLEDGED_ELSEWHERE: len(elsewhere),
            Count.FAILED: len(self.failed),
        }

    def end_reason(self, stopping: bool) -> str:
        """Why the results stream ends: ``complete`` only when the end of stream came and
        nothing it listed is missing or failed."""
        if self.ended and not self.missing():
            return "complete" if not self.failed else FAILED_FRAMES
        return "stopped" if stopping else "incomplete"

    # ---------------------------------------------------------------- summary
    def summary(self) -> dict[str, Any]:
        """The accounting keys of the sink's summary."""
        missing, elsewhere = self._outstanding()
        return {
            Count.EXPECTED: self.ledger.expected,
            Count.MISSING: len(missing),
            Count.MISSING_IDS: list(itertools.islice(missing, SUMMARY_IDS)),
            Count.ACKNOWLEDGED_ELSEWHERE: len(elsewhere),
            Count.FAILED: len(self.failed),
            Count.FAILED_IDS: list(itertools.islice(self.failed, SUMMARY_IDS)),
            Count.PER_WORKER: dict(self.per_worker),
        }

    def latency_ms(self) -> dict[str, float] | None:
        """Acquisition-to-sink latency percentiles of the results received (None before one)."""
        if not self._latency_ns:
            return None
        import numpy as np  # only when a summary is asked for

        lat = np.array(self._latency_ns) / 1e6
        return {p: round(float(np.percentile(lat, q)), 3) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))}


class WorkerLiveness:
    """Which workers are alive, from their results and heartbeats.

    A worker silent for ``timeout_s`` is lost (listed in ``lost``, once). The pool is
    ready for the ventilator once ``pool_size`` workers were heard, or one was heard
    POOL_GRACE_S ago: a short run then does not finish before the other workers are up
    (they would miss the work, and the stop at the end).
    """

    def __init__(
        self,
        *,
        timeout_s: float,
        pool_size: int,
        clock: Callable[[], float],
    ) -> None:
        self.clock = clock
        self.timeout_s = timeout_s
        self.pool_size = pool_size
        #: name → when last heard (clock seconds)
        self.alive: dict[str, float] = {}
        #: names of the workers that timed out, in order
        self.lost: list[str] = []
        self._first_at = 0.0
        self._announce_due = 0.0

    def heard_from(self, name: str) -> bool:
        """A result or heartbeat from ``name``; True when it joined (new, or back after lost)."""
        now = self.clock()
        if name not in self.alive and len(self.alive) >= MAX_WORKERS:
            return False  # bounded: a flood of made-up names must not grow the table
        if not self.alive and not self.lost:
            self._first_at = now
        joined = name not in self.alive
        if joined:
            self._announce_due = 0.0  # the ventilator hears of it at once
        self.alive[name] = now
        return joined

    def check(self) -> list[tuple[str, float]]:
        """Workers silent too long, now lost: (name, seconds silent) each."""
        now = self.clock()
        gone: list[tuple[str, float]] = []
        for name, seen in list(self.alive.items()):
            if now - seen > self.timeout_s:
                del self.alive[name]
                self.lost.append(name)
                del self.lost[:-MAX_WORKERS]
                gone.append((name, now - seen))
                self._announce_due = 0.0
        return gone

    def announcement(self) -> list[str] | None:
        """The live workers' names, when they are due to be announced (else None)."""
        now = self.clock()
        if now < self._announce_due:
            return None
        self._announce_due = now + WORKERS_INTERVAL_S
        return sorted(self.alive)

    def pool_ready(self) -> bool:
        """At least one worker, and the whole pool or POOL_GRACE_S since the first one."""
        if not self.alive:
            return False
        if len(self.alive) >= self.pool_size:
            return True
        return self.clock() - self._first_at >= POOL_GRACE_S

    def summary(self) -> dict[str, Any]:
        """The liveness keys of the sink's summary."""
        return {Count.WORKERS_LOST: list(self.lost), Count.WORKERS_ALIVE: len(self.alive)}
