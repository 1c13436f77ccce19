"""A shared-memory ring of frame slots: pixels written once, only descriptors on the sockets.

On one host, a producer (the publisher) writes each frame into a slot of its ring once;
its same-host consumers get a small descriptor (ring, slot, generation) on the stream and
read the slot in place. Across hosts nothing changes: TCP carries the pixels
(docs/decisions/0003-shared-memory.md).

The segment is a file in ``/dev/shm`` mapped with :mod:`mmap` — not
``multiprocessing.shared_memory``, whose resource tracker (Python 3.11) unlinks segments it
thinks a process leaked, including ones other processes still use. Its layout, little
endian, fixed by ``slots`` and ``rows``::

    [ 0, 4096)   magic "FPRING01", u32 length, JSON: nonce, slots, slot_bytes, rows, pid
    gen          u64 × slots        the slot's generation; bumped *before* it is rewritten
    holders      u64 × slots        bit r: consumer row r must release this generation
    seqs         u64 × slots        the stream's sequence number of what the slot holds
    claim        u64 × rows         pid of the consumer holding row r (0: none yet)
    released     u64 × rows × slots the generation row r released, per slot
    data         slots × slot_bytes (page aligned)

Every cell has one writer — gen and holders the producer, a row's claim and released
cells that row's consumer — so no atomics are needed: a consumer reads a slot, then
checks its generation again (:meth:`Ring.still`), and a slot rewritten meanwhile is never
mistaken for the old frame. The producer reuses a slot only when every row that held it
released it, or is gone: its connection dropped (the owner says so, :meth:`Ring.drop_row`)
or its claiming process no longer exists.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import re
import secrets
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from framepipe.core.errors import ProtocolError

#: where segments live (tmpfs); a test may point it elsewhere
SHM_DIR = Path("/dev/shm")
MAGIC = b"FPRING01"
PAGE = 4096
#: the most consumer rows a ring has (a bit each in ``holders``)
MAX_ROWS = 64
#: a consumer seen alive is not asked again for this long (its death frees its slots at most
#: this late)
ALIVE_TTL_S = 0.05
#: a ring's name: framepipe-<deployment>-<stream>-<instance>-<n>, nothing that leaves SHM_DIR
NAME_RE = re.compile(r"^framepipe-[A-Za-z0-9_.-]{1,120}$")
PREFIX = "framepipe-"


class RingError(Exception):
    """A ring that cannot be made or attached (no space in /dev/shm, not ours, gone)."""


def segment_prefix(deployment: str, stream: str) -> str:
    """The name prefix of a producer's rings: one per deployment and stream."""
    safe = re.sub(r"[^A-Za-z0-9_.]", "_", deployment)[:60]
    return f"{PREFIX}{safe}-{stream}-"


def host_identity() -> str:
    """What makes two processes able to share a ring: the same boot of the same kernel,
    the same network namespace (a LAN test's hosts are namespaces), the same pid namespace
    (a consumer's pid tells the producer it died) and the same /dev/shm. Compared at sync;
    the producer's ring is then probed (its nonce) before anything relies on it."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        parts.append("?")
    for ns in ("net", "pid"):
        try:
            parts.append(str(os.stat(f"/proc/self/ns/{ns}").st_ino))
        except OSError:
            parts.append("?")
    try:
        parts.append(str(os.stat(SHM_DIR).st_dev))
    except OSError:
        parts.append("?")
    return ":".join(parts)


def _started(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), None if there is none: a pid
    with another start time is another process (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rpartition(")")[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ring:
    """One mapped segment, as its producer (:meth:`create`) or a consumer (:meth:`attach`)."""

    def __init__(self, name: str, mm: mmap.mmap, meta: dict[str, Any], *, owner: bool):
        self.name = name
        self.owner = owner
        self._mm = mm
        self.meta = meta
        self.nonce: str = meta["nonce"]
        self.slots: int = meta["slots"]
        self.slot_bytes: int = meta["slot_bytes"]
        self.rows: int = meta["rows"]
        buf = memoryview(mm)
        offset = PAGE
        self.gen = np.frombuffer(buf, np.uint64, self.slots, offset)
        offset += 8 * self.slots
        self.holders = np.frombuffer(buf, np.uint64, self.slots, offset)
        offset += 8 * self.slots
        self.seqs = np.frombuffer(buf, np.uint64, self.slots, offset)
        offset += 8 * self.slots
        self.claim = np.frombuffer(buf, np.uint64, self.rows, offset)
        offset += 8 * self.rows
        self.released = np.frombuffer(buf, np.uint64, self.rows * self.slots, offset).reshape(self.rows, self.slots)
        self._data_offset = _data_offset(self.slots, self.rows)
        #: producer: rows nobody claimed follow this row's liveness (a worker's results ring:
        #: the sink releases for subscribers that do not read rings; if the sink is gone, so are they)
        self.proxy_row: int | None = None
        self._buf = buf
        self._next = 0
        #: pid → when it was last seen alive (monotonic s): a full ring is scanned often,
        #: and a kill(pid, 0) per held slot per scan was a fifth of the publisher's CPU
        self._seen_alive: dict[int, float] = {}

    # ---------------------------------------------------------------- making and attaching
    @classmethod
    def create(cls, name: str, *, slots: int, slot_bytes: int, rows: int) -> Ring:
        """Make the segment (RingError if /dev/shm has no room: the space is reserved now,
        so a full tmpfs is an error here and never a SIGBUS later)."""
        if not NAME_RE.match(name):
            raise ValueError(f"bad ring name {name!r}")
        if not 0 < rows <= MAX_ROWS:
            raise ValueError(f"rows must be 1…{MAX_ROWS}")
        slot_bytes = -(-slot_bytes // PAGE) * PAGE
        size = _data_offset(slots, rows) + slots * slot_bytes
        meta = {
            "nonce": secrets.token_hex(8),
            "slots": slots,
            "slot_bytes": slot_bytes,
            "rows": rows,
            "pid": os.getpid(),
            "started": _started(os.getpid()),
        }
        path = SHM_DIR / name
        try:
            stat = os.statvfs(SHM_DIR)
        except OSError as e:
            raise RingError(f"no {SHM_DIR}: {e.strerror}") from None
        if stat.f_bavail * stat.f_frsize < size:
            raise RingError(
                f"{SHM_DIR} has {stat.f_bavail * stat.f_frsize / 1e6:.0f} MB free, a ring of {slots} × "
                f"{slot_bytes / 1e6:.1f} MB needs {size / 1e6:.0f} MB (lower transport.ring_frames)"
            )
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise RingError(f"cannot create {path}: {e.strerror}") from None
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                raise RingError(
                    f"{SHM_DIR} has no room for a ring of {slots} × {slot_bytes / 1e6:.1f} MB: {e.strerror}"
                ) from None
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        head = json.dumps(meta).encode()
        mm[: len(MAGIC) + 4 + len(head)] = MAGIC + struct.pack("<I", len(head)) + head
        return cls(name, mm, meta, owner=True)

    @classmethod
    def attach(cls, name: str, nonce: str | None = None) -> Ring:
        """Map a producer's ring (RingError if it is not there, not a ring, or — with
        ``nonce`` — not the one the producer announced: the probe that proves this process
        sees the producer's /dev/shm)."""
        if not NAME_RE.match(name):
            raise RingError(f"bad ring name {name!r}")
        path = SHM_DIR / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as e:
            raise RingError(f"cannot open {path}: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            if size < PAGE:
                raise RingError(f"{path} is not a framepipe ring")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        meta = _read_meta(mm)
        if meta is None or size < _data_offset(meta["slots"], meta["rows"]) + meta["slots"] * meta["slot_bytes"]:
            mm.close()
            raise RingError(f"{path} is not a framepipe ring")
        if nonce is not None and meta["nonce"] != nonce:
            mm.close()
            raise RingError(f"{path} is another ring than the one announced")
        return cls(name, mm, meta, owner=False)

    def close(self) -> None:
        """Unmap (and, the producer, remove the segment). Safe twice."""
        if self._mm.closed:
            return
        for attr in ("gen", "holders", "seqs", "claim", "released"):
            setattr(self, attr, None)
        self._buf.release()
        try:
            self._mm.close()
        except BufferError:
            pass  # a view is still exported (a frame being sent): the mapping goes with the process
        if self.owner:
            (SHM_DIR / self.name).unlink(missing_ok=True)

    # ---------------------------------------------------------------- the producer
    def free_slot(self) -> int | None:
        """A slot every holder released (round robin from the last one), or None: the ring is full.

        The next slot in turn is looked at first (the oldest: free unless the ring is full
        or a consumer lags); otherwise every slot at once, a row at a time: a full ring is
        asked again and again while a lossless producer waits.
        """
        s = self._next
        if self._is_free(s):
            self._next = (s + 1) % self.slots
            return s
        pending = np.zeros(self.slots, bool)
        for row in range(self.rows):
            if not self._row_gone(row):
                pending |= (self.holders & np.uint64(1 << row)).astype(bool) & (self.released[row] < self.gen)
        free = np.flatnonzero(~pending)
        if not free.size:
            return None
        later = free[free >= s]
        s = int(later[0] if later.size else free[0])
        self._next = (s + 1) % self.slots
        return s

    def _is_free(self, s: int) -> bool:
        holders = int(self.holders[s])
        if not holders:
            return True
        gen = self.gen[s]
        for row in range(self.rows):
            if holders >> row & 1 and self.released[row, s] < gen and not self._row_gone(row):
                return False
        return True

    def _row_gone(self, row: int) -> bool:
        pid = int(self.claim[row])
        if pid == 0 and self.proxy_row is not None and row != self.proxy_row:
            return self._row_gone(self.proxy_row)
        if pid == 0:
            return False
        now = time.monotonic()
        if now - self._seen_alive.get(pid, -ALIVE_TTL_S) < ALIVE_TTL_S:
            return False
        if not _pid_alive(pid):
            return True
        if len(self._seen_alive) > 4 * MAX_ROWS:
            self._seen_alive.clear()
        self._seen_alive[pid] = now
        return False

    def write(self, slot: int, array: np.ndarray, rows: set[int], seq: int = 0) -> int:
        """Copy ``array`` (sequence number ``seq``) into ``slot`` for consumer ``rows``;
        returns its new generation."""
        gen = int(self.gen[slot]) + 1
        self.gen[slot] = gen  # first: a late reader of the old frame sees it changed
        self.holders[slot] = sum(1 << r for r in rows)
        self.seqs[slot] = seq
        np.copyto(self.view(slot, array.dtype, array.shape), array, casting="no")
        return gen

    def drop_row(self, row: int) -> None:
        """Row ``row``'s consumer is gone (its connection dropped): its holds are void. A
        consumer that comes back under that row holds what it is sent from then on."""
        self.holders &= np.uint64(~(1 << row) & 0xFFFFFFFFFFFFFFFF)

    def in_use(self) -> int:
        """Slots some live consumer still holds."""
        return sum(1 for s in range(self.slots) if not self._is_free(s))

    # ---------------------------------------------------------------- consumers
    def take_row(self, row: int, *, fresh: bool = False) -> None:
        """Claim row ``row`` for this process (its pid there: the producer knows when it
        dies). ``fresh``: this consumer joins the stream now and holds nothing yet, so what
        the row's last consumer (a restarted one's predecessor) held is released. Not for
        a ring attached on its first descriptor: its slots sent to us are ours to read."""
        if not 0 <= row < self.rows:
            raise RingError(f"row {row} is not in {self.name} (rows 0…{self.rows - 1})")
        self.claim[row] = os.getpid()
        if fresh:
            self.released[row, :] = np.maximum(self.released[row, :], self.gen)

    def view(
        self, slot: int, dtype: np.dtype[Any] | str, shape: tuple[int, ...] | list[int], at: int = 0
    ) -> np.ndarray:
        """``at`` bytes into the slot, an array (no copy); ProtocolError if it does not fit."""
        if not 0 <= slot < self.slots:
            raise ProtocolError(f"slot {slot} out of range (ring {self.name} has {self.slots})", kind="bad_slot")
        dt = np.dtype(dtype)
        count = math.prod(shape)
        if at + count * dt.itemsize > self.slot_bytes:
            raise ProtocolError(
                f"{dt.name}{list(shape)} does not fit a slot of {self.slot_bytes} bytes", kind="bad_slot"
            )
        offset = self._data_offset + slot * self.slot_bytes + at
        return np.frombuffer(self._buf, dt, count, offset).reshape(shape)

    def take_slot(self, slot: int, rows: set[int]) -> int:
        """Producer: ``slot`` is being written, for consumer ``rows``; its new generation.
        The generation moves first, so a late reader of what the slot held sees it changed;
        the slot stays held (not free) until the rows release it or :meth:`give_back`."""
        gen = int(self.gen[slot]) + 1
        self.gen[slot] = gen
        self.hold(slot, rows)
        return gen

    def hold(self, slot: int, rows: set[int]) -> None:
        """Producer: ``slot`` (its generation unchanged) is held by ``rows`` until they release it."""
        self.holders[slot] = sum(1 << r for r in rows)

    def give_back(self, slot: int) -> None:
        """Producer: a slot taken with :meth:`take_slot` is not sent after all: free again."""
        self.holders[slot] = 0

    def views(self, slot: int, items: list[tuple[Any, tuple[int, ...]]]) -> list[np.ndarray]:
        """Arrays of (dtype, shape) packed one after the other in ``slot`` (:func:`packed`),
        no copy: for the producer to write into, or a reader to read (check the generation)."""
        offsets, _ = packed([math.prod(shape) * np.dtype(dt).itemsize for dt, shape in items])
        return [self.view(slot, dt, shape, at) for (dt, shape), at in zip(items, offsets, strict=True)]

    def read_many(self, slot: int, gen: int, items: list[tuple[str, tuple[int, ...]]]) -> list[np.ndarray]:
        """Arrays of (dtype, shape) packed in ``slot`` (:func:`packed`), if it still holds ``gen``."""
        arrays = self.views(slot, items)
        if int(self.gen[slot]) != gen:
            raise ProtocolError(f"slot {slot} of {self.name} was reused (generation {gen} gone)", kind="stale_slot")
        return arrays

    def reset(self) -> None:
        """Producer: every slot free (the consumers' holds are void: e.g. the sink restarted,
        so nobody will read what the ring held)."""
        self.holders[:] = 0

    def release_row(self, row: int) -> None:
        """Release every slot for ``row`` (its consumer is gone: a proxy releases for it)."""
        if 0 <= row < self.rows:
            self.released[row, :] = np.maximum(self.released[row, :], self.gen)

    def read(self, slot: int, gen: int, dtype: np.dtype[Any] | str, shape: tuple[int, ...] | list[int]) -> np.ndarray:
        """The slot as an array, if it still holds generation ``gen`` (ProtocolError ``stale_slot``
        if not). Check :meth:`still` again after using it."""
        array = self.view(slot, dtype, shape)
        if int(self.gen[slot]) != gen:
            raise ProtocolError(f"slot {slot} of {self.name} was reused (generation {gen} gone)", kind="stale_slot")
        return array

    def still(self, slot: int, gen: int) -> bool:
        """True if ``slot`` still holds generation ``gen`` (call after reading it)."""
        return int(self.gen[slot]) == gen

    def release(self, row: int, slot: int, gen: int) -> None:
        """This consumer (row ``row``) is done with generation ``gen`` of ``slot``."""
        if 0 <= row < self.rows and 0 <= slot < self.slots and self.released[row, slot] < gen:
            self.released[row, slot] = gen


#: alignment of each array packed in a slot
ALIGN = 64


def packed(sizes: list[int]) -> tuple[list[int], int]:
    """Offsets of arrays of ``sizes`` bytes one after the other in a slot, each aligned, and
    the bytes they need together."""
    offsets, at = [], 0
    for size in sizes:
        offsets.append(at)
        at += -(-size // ALIGN) * ALIGN
    return offsets, at


def _data_offset(slots: int, rows: int) -> int:
    table = PAGE + 8 * (3 * slots + rows + rows * slots)
    return -(-table // PAGE) * PAGE


def _read_meta(mm: mmap.mmap) -> dict[str, Any] | None:
    if mm[: len(MAGIC)] != MAGIC:
        return None
    (length,) = struct.unpack("<I", mm[len(MAGIC) : len(MAGIC) + 4])
    if not 0 < length < PAGE - 12:
        return None
    try:
        meta = json.loads(mm[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
    except ValueError:
        return None
    keys = {"nonce": str, "slots": int, "slot_bytes": int, "rows": int, "pid": int}
    if not isinstance(meta, dict) or any(not isinstance(meta.get(k), t) for k, t in keys.items()):
        return None
    if not (0 < meta["slots"] <= 1 << 16 and 0 < meta["rows"] <= MAX_ROWS and 0 < meta["slot_bytes"] <= 1 << 34):
        return None
    return meta


def remove_stale(prefix: str) -> list[str]:
    """Remove segments named ``prefix…`` whose producer is dead (a ``kill -9`` left them).

    Called by a producer at start: no segment outlives the next start."""
    removed = []
    for path in SHM_DIR.glob(prefix + "*"):
        try:
            with open(path, "rb") as fh:
                head = fh.read(PAGE)
        except OSError:
            continue
        meta: Any = None
        if head[: len(MAGIC)] == MAGIC:
            try:
                (length,) = struct.unpack("<I", head[len(MAGIC) : len(MAGIC) + 4])
                meta = json.loads(head[len(MAGIC) + 4 : len(MAGIC) + 4 + length])
            except (ValueError, struct.error):
                meta = None
        pid = meta.get("pid") if isinstance(meta, dict) else None
        if isinstance(pid, int) and _started(pid) is not None and _started(pid) == meta.get("started"):
            continue  # its producer is running
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


class RingReader:
    """A consumer's rings, attached on first use by name (at most ``limit`` kept: a
    producer makes a new ring only when frames outgrow the old one)."""

    def __init__(self, row: int | None = None, limit: int = 4):
        #: the row this consumer claims in each ring (None: it holds nothing, e.g. a worker,
        #: whose frames the ventilator holds until they are acknowledged)
        self.row = row
        self.limit = limit
        self._rings: dict[str, Ring] = {}
        #: slots read and not yet released: (ring, slot, generation)
        self.held: set[tuple[str, int, int]] = set()

    def ring(self, name: str) -> Ring:
        """The ring ``name`` (attached now if new); ProtocolError ``bad_slot`` if it cannot be."""
        ring = self._rings.get(name)
        if ring is not None:
            return ring
        try:
            ring = Ring.attach(name)
        except RingError as e:
            raise ProtocolError(f"unknown ring: {e}", kind="bad_slot") from None
        if self.row is not None:
            try:
                ring.take_row(self.row)
            except RingError as e:
                ring.close()
                raise ProtocolError(str(e), kind="bad_slot") from None
        while len(self._rings) >= self.limit:
            self._rings.pop(next(iter(self._rings))).close()
        self._rings[name] = ring
        return ring

    def probe(self, name: str, nonce: str) -> Ring:
        """Attach the ring a producer offered and check its nonce there (RingError if this
        process does not see that producer's /dev/shm): the proof that the ring is shared."""
        ring = Ring.attach(name, nonce)
        if self.row is not None:
            try:
                ring.take_row(self.row, fresh=True)
            except RingError:
                ring.close()
                raise
        old = self._rings.pop(name, None)
        if old is not None:
            old.close()
        self._rings[name] = ring
        return ring

    def read(self, header: dict[str, Any]) -> list[np.ndarray]:
        """A descriptor's data in place: a frame's pixels, or a result's outputs in order
        (ProtocolError ``bad_slot``/``stale_slot``). The header was validated (protocol.decode)."""
        ring = self.ring(header["ring"])
        if "outputs" in header:
            items = [(o["dtype"], tuple(o["shape"])) for o in header["outputs"]]
            arrays = ring.read_many(header["slot"], header["gen"], items)
        elif "encoding" in header:  # the publisher's compressed chunk, as it made it
            arrays = [ring.read(header["slot"], header["gen"], "uint8", (header["encoded_bytes"],))]
        else:
            arrays = [ring.read(header["slot"], header["gen"], header["dtype"], header["shape"])]
        if self.row is not None and len(self.held) < 1 << 16:
            self.held.add((ring.name, header["slot"], header["gen"]))
        return arrays

    def release_missed(self, name: str, before_seq: int) -> int:
        """Descriptors were lost on the way (a dropping stream's high-water mark): release
        this row's slots of ring ``name`` written before ``before_seq`` and not held here
        (we will never be told about them). Returns how many."""
        ring = self._rings.get(name)
        if ring is None or self.row is None:
            return 0
        freed = 0
        for s in range(ring.slots):
            gen = int(ring.gen[s])
            if ring.released[self.row, s] < gen and ring.seqs[s] < before_seq and (name, s, gen) not in self.held:
                ring.release(self.row, s, gen)
                freed += 1
        return freed

    def release(self, header: dict[str, Any], rows: Iterable[int] | None = None) -> None:
        """Done with a descriptor's slot: for this reader's row, or for ``rows`` (a proxy
        releasing for consumers that will not read it)."""
        ring = self._rings.get(header.get("ring", ""))
        if ring is None:
            return
        for row in rows if rows is not None else ([self.row] if self.row is not None else []):
            ring.release(row, header["slot"], header["gen"])
        self.held.discard((ring.name, header["slot"], header["gen"]))

    def release_row(self, row: int) -> None:
        """Release ``row`` in every ring attached here (its consumer is gone)."""
        for ring in self._rings.values():
            ring.release_row(row)

    def release_all(self) -> None:
        """Release every slot of every ring this reader holds (its row)."""
        self.held.clear()
        if self.row is None:
            return
        for ring in self._rings.values():
            ring.released[self.row, :] = np.maximum(ring.released[self.row, :], ring.gen)

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()
