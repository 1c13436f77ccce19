"""The ventilator's in-flight window: exactly-once work distribution, without a socket.

PUSH/PULL loses whatever was queued to a worker that dies, so the ventilator keeps every
frame it sent until the sink acknowledges it. :class:`InFlightWindow` makes every decision
of that scheme; the ventilator only moves messages between its sockets and the window:

- **accept** a frame from the source while there is room: at most ``limit`` frames are
  held (accepted and not yet acknowledged), which bounds the ventilator's memory;
- **send** the frame the window names next (:meth:`InFlightWindow.next_to_send`), and
  say when it went out (:meth:`InFlightWindow.sent`) — a send can fail on a full pool;
- **acknowledge** the ids of the sink's ack batches; an id the window does not hold (a
  late duplicate ack, or one for a frame never sent from here) changes nothing;
- **re-dispatch** a frame not acknowledged within ``redispatch_after_s``, and every sent
  frame at once when a worker's connection drops;
- **end of stream** once every accepted frame is acknowledged, listing the accepted ids.

The frames' message parts are opaque here (any object): the window never looks inside.
The clock is injected (monotonic seconds), so the unit tests run in milliseconds.

May import: the standard library and the rest of ``framepipe.core``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Generic, TypeVar

from framepipe.core.counters import Count
from framepipe.core.ledger import FrameLedger, IdRanges

PartsT = TypeVar("PartsT")


class InFlightFrame(Generic[PartsT]):
    """A frame accepted and not yet acknowledged: its message parts and how often it was sent."""

    __slots__ = ("attempts", "frame_id", "parts")

    def __init__(self, frame_id: int, parts: PartsT):
        self.frame_id = frame_id
        self.parts = parts
        #: sends so far; the next send is attempt number ``attempts`` (0 the first time)
        self.attempts = 0


@dataclasses.dataclass(frozen=True)
class EndOfStream:
    """What the ventilator tells the sink at the end: the ids it accepted, and those not
    acknowledged (a restarted sink must not wait for frames an earlier one acknowledged)."""

    accepted: list[list[int]]
    unacknowledged: list[list[int]]


class InFlightWindow(Generic[PartsT]):
    """At most ``limit`` frames in flight, each sent until the sink acknowledges it.

    Every frame held is in exactly one of two places: the send queue (accepted, or handed
    back for re-dispatch, waiting for a free worker) or the sent list (out at a worker,
    oldest send first). Both are bounded by ``limit``.

    ``counters`` uses the names of the ventilator's summary (``accepted``, ``dispatched``,
    ``redispatched``, ``acknowledged``, ``unacknowledged``, ``worker_connections``,
    ``worker_disconnects``); a key appears once it is first counted, as in any Counter.
    """

    def __init__(self, limit: int, redispatch_after_s: float, clock: Callable[[], float]):
        if limit < 1:
            raise ValueError(f"the window must hold at least one frame, not {limit}")
        self.limit = limit
        self.redispatch_after_s = redispatch_after_s
        self._clock = clock
        self._frames: dict[int, InFlightFrame[PartsT]] = {}
        # ordered sets (dicts to None): an ack takes a frame out of either in O(1)
        self._queue: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._sent: collections.OrderedDict[int, float] = collections.OrderedDict()  # id → sent at
        self.accepted = FrameLedger()
        self.counters: collections.Counter[str] = collections.Counter()
        #: acks for ids not held (late duplicates, never sent from here): kept out of
        #: ``counters`` so that the ventilator's summary keys stay what they were
        self.ignored_acks = 0
        #: the workers the sink reports alive, sorted by name
        self.workers: list[str] = []

    # ------------------------------------------------------------------ what is held
    @property
    def in_flight(self) -> Mapping[int, InFlightFrame[PartsT]]:
        """Every frame accepted and not yet acknowledged, by id."""
        return self._frames

    @property
    def queue(self) -> Collection[int]:
        """Ids waiting to be sent, in the order they will go."""
        return self._queue.keys()

    @property
    def has_room(self) -> bool:
        """True while fewer than ``limit`` frames are held: the source may be read."""
        return len(self._frames) < self.limit

    @property
    def all_acknowledged(self) -> bool:
        """True when every frame accepted was acknowledged: the end of stream may go."""
        return not self._frames

    # ------------------------------------------------------------------ frames in
    def accept(self, frame_id: int, parts: PartsT) -> bool:
        """Take a frame from the source and queue it; False (ignored) if its id came before.

        Raises ``OverflowError`` when the window is full: the caller reads its source only
        while :attr:`has_room`, and holding more would break the memory bound.
        """
        if not self.has_room:
            raise OverflowError(f"frame {frame_id} accepted into a full window of {self.limit}")
        if not self.accepted.add(frame_id):
            return False
        self.counters[Count.ACCEPTED] += 1
        self._frames[frame_id] = InFlightFrame(frame_id, parts)
        self._queue[frame_id] = None
        return True

    # ------------------------------------------------------------------ frames out
    def next_to_send(self) -> InFlightFrame[PartsT] | None:
        """The frame to send now (first queued first), or None when nothing waits."""
        for frame_id in self._queue:
            return self._frames[frame_id]
        return None

    def sent(self, frame: InFlightFrame[PartsT]) -> None:
        """Record that ``frame`` went out to a worker now: its re-dispatch deadline starts."""
        del self._queue[frame.frame_id]
        frame.attempts += 1
        self._sent[frame.frame_id] = self._clock()
        self.counters[Count.DISPATCHED] += 1
        if frame.attempts > 1:
            self.counters[Count.REDISPATCHED] += 1

    # ------------------------------------------------------------------ acknowledgements
    def acknowledge(self, frame_ids: Iterable[int]) -> int:
        """Release the frames of one ack batch; return how many were newly acknowledged.

        The sink acknowledges every result, duplicates included, so a re-dispatched frame
        is often acknowledged twice: only the first counts. An ack for a frame never sent
        from here cannot be for this frame (a stale batch, another run's ids): ignoring it
        costs nothing, trusting it could lose the frame.
        """
        done = 0
        for frame_id in frame_ids:
            frame = self._frames.get(frame_id)
            if frame is None or frame.attempts == 0:
                self.ignored_acks += 1
                continue
            del self._frames[frame_id]
            self._queue.pop(frame_id, None)  # handed back for re-dispatch, not sent again yet
            self._sent.pop(frame_id, None)
            done += 1
        if done:  # a Counter keeps a key set to 0: the summary would show one never counted
            self.counters[Count.ACKNOWLEDGED] += done
        return done

    # ------------------------------------------------------------------ re-dispatch
    def redispatch_overdue(self) -> int:
        """Queue again every frame sent ``redispatch_after_s`` ago or longer and still not
        acknowledged; return how many."""
        limit = self._clock() - self.redispatch_after_s
        n = 0
        while self._sent:
            frame_id, sent_at = next(iter(self._sent.items()))
            if sent_at > limit:
                break  # oldest send first: the rest are newer
            self._hand_back(frame_id)
            n += 1
        return n

    def worker_connected(self) -> None:
        """A worker connected to the tasks socket: it joins the round-robin."""
        self.counters[Count.WORKER_CONNECTIONS] += 1

    def worker_disconnected(self) -> int:
        """A worker's connection dropped (killed, crashed, or hung past its heartbeats):
        queue again every frame sent and not acknowledged; return how many.

        PUSH does not say which worker held which frame, so some of these are duplicates
        the sink drops: at most one window per failure, the price of not waiting for the
        deadline.
        """
        self.counters[Count.WORKER_DISCONNECTS] += 1
        n = len(self._sent)
        while self._sent:
            self._hand_back(next(iter(self._sent)))
        return n

    def workers_changed(self, alive: Iterable[str]) -> tuple[list[str], list[str]]:
        """The sink's list of live workers; return the names that joined and that left.

        A worker named lost here hands nothing back: its connection dropping (see
        :meth:`worker_disconnected`) is what says its frames will not come back.
        """
        names = sorted(alive)
        if names == self.workers:
            return [], []
        joined = sorted(set(names) - set(self.workers))
        left = sorted(set(self.workers) - set(names))
        self.workers = names
        return joined, left

    def _hand_back(self, frame_id: int) -> None:
        del self._sent[frame_id]
        self._queue[frame_id] = None

    def begin_acquisition(self) -> None:
        """The next acquisition: exactly-once starts again (its frame ids start again)."""
        if self._frames:
            raise RuntimeError(f"{len(self._frames)} frame(s) of the last acquisition still held")
        self.accepted = FrameLedger()

    # ------------------------------------------------------------------ end of stream
    def end_of_stream(self) -> EndOfStream:
        """The accepted and the unacknowledged ids as ranges; counts the unacknowledged."""
        self.counters[Count.UNACKNOWLEDGED] = len(self._frames)
        return EndOfStream(
            accepted=self.accepted.ranges(),
            unacknowledged=IdRanges(sorted(self._frames)).ranges(),
        )
