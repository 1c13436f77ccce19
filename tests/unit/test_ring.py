"""The shared-memory ring: slot lifetime, generations, dead consumers, stale segments, bad descriptors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from framepipe.core.errors import ProtocolError
from framepipe.wire import ring as ringmod
from framepipe.wire.protocol import data_header, decode, encode_slot, result_header
from framepipe.wire.ring import Ring, RingError, RingReader, remove_stale


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private directory stands in for /dev/shm (same code path: a file, mmap)."""
    monkeypatch.setattr(ringmod, "SHM_DIR", tmp_path)
    yield tmp_path


def frame(value: int, shape: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.full(shape, value, np.uint16) + np.arange(shape[1], dtype=np.uint16)


def test_a_frame_written_once_is_read_in_place_pixel_exact(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-a-1", slots=4, slot_bytes=64 * 48 * 2, rows=2)
    consumer = Ring.attach(producer.name, producer.nonce)
    slot = producer.free_slot()
    assert slot is not None
    gen = producer.write(slot, frame(7), {0})
    seen = consumer.read(slot, gen, "uint16", (64, 48))
    assert np.array_equal(seen, frame(7))
    assert not seen.flags.writeable or seen.base is not None  # a view of the segment, no copy
    consumer.close()
    producer.close()
    assert not (shm / producer.name).exists()


def test_a_slot_is_reused_only_after_every_holder_released_it(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-b-1", slots=2, slot_bytes=4096, rows=2)
    a, b = Ring.attach(producer.name), Ring.attach(producer.name)
    a.take_row(0)
    b.take_row(1)
    gens = {}
    for value in (1, 2):
        slot = producer.free_slot()
        assert slot is not None
        gens[slot] = producer.write(slot, frame(value, (8, 8)), {0, 1})
    assert producer.free_slot() is None  # full: both slots held by both rows
    a.release(0, 0, gens[0])
    assert producer.free_slot() is None  # row 1 still holds slot 0
    b.release(1, 0, gens[0])
    assert producer.free_slot() == 0
    producer.close()


def test_a_reused_slot_is_never_mistaken_for_the_old_frame(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-c-1", slots=1, slot_bytes=4096, rows=1)
    consumer = Ring.attach(producer.name)
    old = producer.write(0, frame(1, (8, 8)), set())
    view = consumer.read(0, old, "uint16", (8, 8))
    producer.write(0, frame(2, (8, 8)), set())
    assert not consumer.still(0, old)  # read, then checked: the frame changed under it
    with pytest.raises(ProtocolError) as err:
        consumer.read(0, old, "uint16", (8, 8))
    assert err.value.kind == "stale_slot"
    del view
    producer.close()


def test_a_dead_consumer_gives_its_slots_back(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-d-1", slots=1, slot_bytes=4096, rows=1)
    producer.write(0, frame(1, (8, 8)), {0})
    # a real process claims row 0 and exits without releasing (as after kill -9)
    code = (
        "import sys; from framepipe.wire import ring; ring.SHM_DIR = __import__('pathlib').Path(sys.argv[1]);"
        "ring.Ring.attach(sys.argv[2]).take_row(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(shm), producer.name], check=True, timeout=60)
    assert producer.free_slot() == 0
    producer.close()


def test_a_consumer_whose_connection_dropped_holds_nothing(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-e-1", slots=1, slot_bytes=4096, rows=2)
    Ring.attach(producer.name).take_row(1)  # alive (this process), never releases
    producer.write(0, frame(1, (8, 8)), {1})
    assert producer.free_slot() is None
    producer.drop_row(1)
    assert producer.free_slot() == 0
    producer.write(0, frame(2, (8, 8)), {1})  # it came back (a restarted consumer): it holds again
    assert producer.free_slot() is None
    producer.close()


def test_slots_whose_descriptors_were_dropped_are_released_on_the_gap_but_held_ones_are_kept(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-h-1", slots=4, slot_bytes=4096, rows=1)
    reader = RingReader(row=0)
    written = [(s, producer.write(s, frame(s, (8, 8)), {0}, seq=s)) for s in range(4)]
    header = {"ring": producer.name, "dtype": "uint16", "shape": [8, 8]}
    reader.read({**header, "slot": 0, "gen": written[0][1]})  # seq 0 read and still held
    # seq 1 and 2 never arrived (dropped at a high-water mark); seq 3 arrives: the gap
    reader.read({**header, "slot": 3, "gen": written[3][1]})
    assert reader.release_missed(producer.name, before_seq=3) == 2
    assert producer.free_slot() in (1, 2)
    assert not producer._is_free(0) and not producer._is_free(3), "what the reader holds stays held"
    reader.close()
    producer.close()


def test_segments_of_dead_producers_are_removed_at_the_next_start(shm: Path) -> None:
    code = (
        "import sys; from framepipe.wire import ring; ring.SHM_DIR = __import__('pathlib').Path(sys.argv[1]);"
        "ring.Ring.create('framepipe-t-frames-dead-1', slots=2, slot_bytes=4096, rows=1)"
    )
    subprocess.run([sys.executable, "-c", code, str(shm)], check=True, timeout=60)  # exits, leaving it
    alive = Ring.create("framepipe-t-frames-live-1", slots=2, slot_bytes=4096, rows=1)
    (shm / "framepipe-t-frames-junk").write_bytes(b"not a ring")
    assert sorted(remove_stale("framepipe-t-frames-")) == ["framepipe-t-frames-dead-1", "framepipe-t-frames-junk"]
    assert (shm / alive.name).exists()
    alive.close()


def test_attach_refuses_what_is_not_the_announced_ring(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-f-1", slots=2, slot_bytes=4096, rows=1)
    with pytest.raises(RingError, match="another ring"):
        Ring.attach(producer.name, "0" * 16)
    (shm / "framepipe-t-x").write_bytes(b"\0" * 8192)
    with pytest.raises(RingError, match="not a framepipe ring"):
        Ring.attach("framepipe-t-x")
    with pytest.raises(RingError, match="bad ring name"):
        Ring.attach("../etc/passwd")
    with pytest.raises(RingError, match="cannot open"):
        Ring.attach("framepipe-t-gone")
    producer.close()


def test_a_ring_larger_than_dev_shm_is_a_clear_error_made_before_allocating(shm: Path) -> None:
    with pytest.raises(RingError, match="ring_frames"):
        Ring.create("framepipe-t-frames-huge-1", slots=4096, slot_bytes=1 << 34, rows=1)
    assert not list(shm.iterdir())


def test_malformed_descriptors_are_rejected_before_any_ring_is_touched(shm: Path) -> None:
    header = data_header("frame", np.zeros((8, 8), np.uint16), frame_id=1, seq=0, t_acq_ns=1)
    for ring, slot, gen, kind in (
        ("../../etc/shadow", 0, 1, "bad_slot"),
        ("framepipe-ok", 0, 0, "bad_slot"),
        ("framepipe-ok", -1, 1, "bad_field"),
    ):
        with pytest.raises(ProtocolError) as err:
            decode(encode_slot(header, ring, slot, gen), max_payload_bytes=1 << 20)
        assert err.value.kind == kind
    with pytest.raises(ProtocolError) as err:
        decode([*encode_slot(header, "framepipe-ok", 0, 1), b"payload"], max_payload_bytes=1 << 20)
    assert err.value.kind == "bad_framing"
    with pytest.raises(ProtocolError) as err:
        decode(encode_slot(header, "framepipe-ok", 0, 1, readers=[64]), max_payload_bytes=1 << 20)
    assert err.value.kind == "bad_slot"
    ok = decode(encode_slot(header, "framepipe-ok", 0, 1, readers=[1, 0]), max_payload_bytes=1 << 20)
    assert ok.header["readers"] == [0, 1] and ok.ring_slot == ("framepipe-ok", 0, 1)
    # whatever the header's order, a descriptor starts with v and kind: subscribers filter on that
    shuffled = {k: header[k] for k in reversed(list(header))}
    assert encode_slot(shuffled, "framepipe-ok", 0, 1)[0].startswith(b'{"v":1,"kind":"slot"')


def test_a_descriptor_naming_an_unknown_ring_a_slot_out_of_range_or_too_big_a_frame_is_rejected(shm: Path) -> None:
    producer = Ring.create("framepipe-t-frames-g-1", slots=2, slot_bytes=4096, rows=1)
    reader = RingReader(row=0)
    cases = [
        ({"ring": "framepipe-t-nothing", "slot": 0, "gen": 1, "dtype": "uint16", "shape": [8, 8]}, "bad_slot"),
        ({"ring": producer.name, "slot": 2, "gen": 1, "dtype": "uint16", "shape": [8, 8]}, "bad_slot"),
        ({"ring": producer.name, "slot": 0, "gen": 1, "dtype": "uint16", "shape": [64, 64]}, "bad_slot"),
        ({"ring": producer.name, "slot": 0, "gen": 5, "dtype": "uint16", "shape": [8, 8]}, "stale_slot"),
    ]
    for header, kind in cases:
        with pytest.raises(ProtocolError) as err:
            reader.read(header)
        assert err.value.kind == kind
    reader.close()
    producer.close()


def test_the_free_slot_found_is_one_every_live_holder_released(shm: Path) -> None:
    """free_slot looks at the next slot in turn, then at all of them at once: whatever it
    returns must be free by the slot-at-a-time rule, and it finds one whenever one is."""
    rng = np.random.default_rng(4)
    producer = Ring.create("framepipe-t-frames-v-1", slots=16, slot_bytes=4096, rows=3)
    consumers = [Ring.attach(producer.name) for _ in range(3)]
    for row, c in enumerate(consumers):
        c.take_row(row)
    for _ in range(300):
        for s in range(producer.slots):
            if rng.random() < 0.6:
                producer.write(s, frame(s, (8, 8)), {r for r in range(3) if rng.random() < 0.5})
        for row, c in enumerate(consumers):
            for s in range(producer.slots):
                if rng.random() < 0.3:
                    c.release(row, s, int(producer.gen[s]))
        producer._next = int(rng.integers(producer.slots))
        free = {s for s in range(producer.slots) if producer._is_free(s)}
        got = producer.free_slot()
        assert (got is None) == (not free)
        assert got is None or got in free
    producer.close()


def test_a_result_is_written_into_its_slot_by_the_processor_and_only_a_descriptor_leaves(shm: Path) -> None:
    """The worker's side: a slot claimed before computing, the outputs written into it (the
    arrays handed out are the slot), the descriptor sent; a claim not sent is given back;
    a sink that restarted between the claim and the send still holds the slot it is sent."""
    import logging
    from types import SimpleNamespace

    from framepipe.core.outputs import Output
    from framepipe.wire.result_ring import ResultRing
    from framepipe.wire.ring import host_identity

    log = logging.getLogger("test")
    owner = SimpleNamespace(log=log, warn=SimpleNamespace(warning=lambda *a: None), stopping=False)
    results = ResultRing(owner, subscribers=["recorder-results"], run_name="t", slots=6)  # type: ignore[arg-type]
    outputs = [Output("spectrum", "float32", (8, 5)), Output("total", "float64", ())]
    assert results.claim(outputs, lambda s: False) is None, "the sink has not said it is here"
    results.sink_seen(host_identity(), "sink-1")
    claimed = results.claim(outputs, lambda s: False)
    assert claimed is not None and results.ring is not None
    claimed.views[0][...] = 3.0
    claimed.views[1][...] = 7.5
    header = result_header(outputs, frame_id=1, seq=1, t_acq_ns=1)
    parts = results.put(header, list(claimed.views), claimed)
    assert parts is not None and len(parts) == 1, "a descriptor, no payload"
    assert decode(parts, max_payload_bytes=1 << 20).ring_slot == (results.ring.name, claimed.slot, claimed.gen)
    reader = Ring.attach(results.ring.name)
    spectrum, total = reader.read_many(claimed.slot, claimed.gen, [("float32", (8, 5)), ("float64", ())])
    assert np.all(spectrum == 3.0) and float(total) == 7.5
    # a claim whose result is not sent from it comes back at once
    before = results.ring.in_use()
    dropped = results.claim(outputs, lambda s: False)
    assert dropped is not None and results.ring.in_use() == before + 1
    results.abandon(dropped)
    assert results.ring.in_use() == before
    # the sink restarts between the claim and the send: the slot is held again when sent
    again = results.claim(outputs, lambda s: False)
    assert again is not None
    results.sink_seen(host_identity(), "sink-2")  # frees every slot
    assert results.ring.in_use() == 0
    assert results.put(header, list(again.views), again) is not None
    assert results.ring.in_use() == 1
    # a full ring: no claim (the result goes by TCP), counted
    while results.claim(outputs, lambda s: True) is not None:  # True: do not wait
        pass
    assert results.full == 1 and results.ring.in_use() == 6, "transport.result_ring_frames slots"
    reader.close()
    results.close()
