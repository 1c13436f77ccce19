"""A worker's results in its own shared-memory ring, when the sink runs on the same host.

The sink announces where it runs (``host`` in its workers list, topic ``workers``); a worker
on that host writes each result's outputs into a slot of its ring (wire/ring.py) and sends
the sink a descriptor instead of the arrays. The sink reads them in place and forwards the
descriptor to its same-host subscribers (the results recorder), which read them there too.

Rows: 0 is the sink's; 1 + i is the sink's i-th configured subscriber's (``sink.subscribers``,
the same list in every process of a deployment). Every slot is held by all of them; the sink
releases, besides its own, the rows of subscribers that are not reading rings (not here,
another host, or gone), so a slot comes back once the sink forwarded it and the readers
wrote it. Unclaimed rows follow the sink's (``proxy_row``): if the sink dies, nothing is held.
A sink that restarts (a new instance in its announcement) frees every slot: nobody will
read what the ring held, and the frames are re-dispatched.

Any doubt goes by TCP: another host, a ring that cannot be made, or no free slot within
:data:`FULL_WAIT_S` (the result goes as arrays; counted).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from framepipe.core.outputs import Output
from framepipe.wire.protocol import encode_slot
from framepipe.wire.ring import Ring, RingError, host_identity, packed, remove_stale, segment_prefix
from framepipe.wire.sockets import SocketOwner

#: how long a result waits for a free slot before it goes by TCP instead
FULL_WAIT_S = 0.5
#: while the ring is full, how often it is looked at again
RECHECK_S = 0.002
#: slots per worker ring (each one result) unless told otherwise (transport.result_ring_frames):
#: the sink's queue and its subscribers' lag
SLOTS = 16


@dataclasses.dataclass(frozen=True, slots=True)
class ResultSlot:
    """A slot claimed for one result: the processor writes its outputs into ``views``."""

    ring: Ring
    slot: int
    gen: int
    views: list[np.ndarray]


class ResultRing:
    """The worker's side: where results go when the sink is on this host."""

    def __init__(self, owner: SocketOwner, subscribers: list[str], run_name: str = "run", *, slots: int = SLOTS):
        self.owner = owner
        self.slots = slots
        self.rows = min(1 + len(subscribers), 64)
        self._rows = set(range(self.rows))
        self.prefix = segment_prefix(run_name, "results") + f"{os.getpid()}-"
        self.host = host_identity()
        self.ring: Ring | None = None
        self._made = 0
        #: the sink's host and instance, from its announcement (None: not heard yet)
        self.sink_host: str | None = None
        self.sink_instance: str | None = None
        #: results that went by TCP because the ring stayed full
        self.full = 0
        self.disabled = False
        for name in remove_stale(segment_prefix(run_name, "results")):
            owner.log.info("removed %s, left in /dev/shm by a worker that no longer exists", name)

    @property
    def active(self) -> bool:
        """Results go into the ring: the sink said it runs here."""
        return not self.disabled and self.sink_host is not None and self.sink_host == self.host

    def sink_seen(self, host: str | None, instance: str | None) -> None:
        """The sink's announcement: where it runs; a new instance frees every slot."""
        if host != self.sink_host:
            self.sink_host = host
            if self.active:
                self.owner.log.info("the sink is on this host: results go through shared memory (%d slots)", self.slots)
        if instance is not None and instance != self.sink_instance:
            if self.sink_instance is not None and self.ring is not None:
                self.ring.reset()
            self.sink_instance = instance

    def claim(self, outputs: list[Output], wait: Callable[[float], bool]) -> ResultSlot | None:
        """A slot taken for the next result, with its outputs' arrays in it for the processor
        to write into (``out=``), or None: the result goes by TCP (another host, no ring, or
        none free within :data:`FULL_WAIT_S`). ``wait(seconds)`` is how the owner waits while
        the ring is full (on its own sockets: True when it must stop). Pass it to :meth:`put`,
        or :meth:`abandon` it."""
        if not self.active or not outputs:
            return None
        need = packed([o.nbytes for o in outputs])[1]
        if self.ring is None or self.ring.slot_bytes < need:
            self._make(need)
        if self.ring is None:
            return None
        slot = self._free_slot(wait)
        if slot is None:
            self.full += 1
            self.owner.warn.warning("ring-full", "results ring full for %.1f s: a result goes by TCP", FULL_WAIT_S)
            return None
        gen = self.ring.take_slot(slot, self._rows)
        return ResultSlot(self.ring, slot, gen, self.ring.views(slot, [(o.dtype, o.shape) for o in outputs]))

    def abandon(self, claimed: ResultSlot | None) -> None:
        """A claimed slot whose result is not sent from it (failed frame, stale frame, stop)."""
        if claimed is not None and claimed.ring is self.ring and self.ring is not None:
            self.ring.give_back(claimed.slot)

    def put(self, header: dict[str, Any], arrays: list[np.ndarray], claimed: ResultSlot) -> list[bytes]:
        """The result's descriptor, its outputs in the ``claimed`` slot. Outputs the processor
        wrote into the slot's arrays are not copied; any other is copied in. ValueError if an
        array is not what the header declares (as encode_result; the slot is given back)."""
        declared = header["outputs"]
        if len(declared) != len(arrays):
            self.abandon(claimed)
            raise ValueError(f"{len(arrays)} arrays for {len(declared)} declared outputs")
        for out, array in zip(declared, arrays, strict=True):
            if array.dtype.name != out["dtype"] or list(array.shape) != out["shape"]:
                self.abandon(claimed)
                raise ValueError(f"output {out['name']!r} does not match its declaration")
        for view, array in zip(claimed.views, arrays, strict=True):
            if array is not view:
                np.copyto(view, array, casting="no")
        claimed.ring.hold(claimed.slot, self._rows)  # again: a sink restart meanwhile freed it
        return encode_slot(header, claimed.ring.name, claimed.slot, claimed.gen)

    def _free_slot(self, wait: Callable[[float], bool]) -> int | None:
        """A free slot, checked again every :data:`RECHECK_S` (releases are writes to shared
        memory: nothing to wait on) while the owner waits on its sockets; None after
        :data:`FULL_WAIT_S` or a stop."""
        assert self.ring is not None
        deadline = time.monotonic() + FULL_WAIT_S
        while (slot := self.ring.free_slot()) is None:
            if time.monotonic() > deadline or self.owner.stopping or wait(RECHECK_S):
                return None
        return slot

    def _make(self, slot_bytes: int) -> None:
        old, self.ring = self.ring, None
        self._made += 1
        try:
            name = f"{self.prefix}{self._made}"
            self.ring = Ring.create(name, slots=self.slots, slot_bytes=slot_bytes, rows=self.rows)
            self.ring.proxy_row = 0
        except RingError as e:
            self.owner.log.warning("no shared-memory ring for results, they go by TCP: %s", e)
            self.disabled = True
        if old is not None:
            old.close()

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
