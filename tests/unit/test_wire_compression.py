"""Frames compressed once at the source: bitshuffle-LZ4 chunks on the wire, in HDF5's own
chunk format, validated before anything is decompressed, pixel-exact after."""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.config import PublisherConfig
from framepipe.core import bitshuffle
from framepipe.core.errors import ProtocolError
from framepipe.storage.compression import Codec
from framepipe.wire.frames import FrameBuffers, frame_array
from framepipe.wire.protocol import data_header, decode, encode_chunk, encode_data

LIMIT = 64 << 20


def _frames() -> list[np.ndarray]:
    """Noise (barely compresses), a real-looking frame, and a flat one (compresses well),
    in both frame dtypes and in shapes whose element count is not a multiple of a block."""
    rng = np.random.default_rng(1)
    out = []
    for dtype in ("uint8", "uint16"):
        top = np.iinfo(dtype).max
        out.append(rng.integers(0, top, (256, 320), dtype=dtype, endpoint=True))  # noise
        out.append(synthetic_frame(3, 240, 320, dtype, seed=5))
        out.append(np.full((101, 77), 7, dtype))  # 7777 elements: a partial block and a tail
        out.append(rng.integers(0, 3, (5, 3), dtype=dtype))  # smaller than one block
    return out


def _wire(array: np.ndarray, encoding: str = "bitshuffle-lz4", **fields: object) -> list[bytes]:
    header = data_header("frame", array, frame_id=4, seq=4, t_acq_ns=1, acquisition=1, **fields)
    return [bytes(memoryview(p)) for p in encode_data(header, array, encoding=encoding)]


def _hdf5plugin_chunk(array: np.ndarray, path: Path) -> bytes:
    """The chunk HDF5's own bitshuffle filter stores for ``array`` (one frame per chunk)."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset("frames", data=array[None], chunks=(1, *array.shape), **hdf5plugin.Bitshuffle(cname="lz4"))
        _, chunk = d.id.read_direct_chunk((0,) * (array.ndim + 1))
    return bytes(chunk)


@pytest.mark.parametrize("index", range(8))
def test_round_trip_is_pixel_exact(index: int) -> None:
    array = _frames()[index]
    parts = _wire(array)
    msg = decode(parts, max_payload_bytes=LIMIT)
    assert msg.encoding == "bitshuffle-lz4" and msg.header["encoded_bytes"] == len(parts[1])
    assert msg.header["shape"] == list(array.shape) and msg.header["dtype"] == array.dtype.name
    np.testing.assert_array_equal(msg.array, array)
    assert msg.array is not None and msg.array.dtype == array.dtype and not msg.array.flags.writeable
    # a worker's path: into a buffer it reuses
    buffers = FrameBuffers()
    first = frame_array(decode(parts, max_payload_bytes=LIMIT), buffers)
    np.testing.assert_array_equal(first, array)
    again = frame_array(decode(parts, max_payload_bytes=LIMIT), buffers)
    assert again is first, "the same buffer, not a new allocation per frame"


def test_well_compressing_frames_shrink_and_noise_does_not_grow_much() -> None:
    flat = np.full((512, 512), 100, np.uint16)
    assert len(_wire(flat)[1]) * 50 < flat.nbytes
    noise = np.random.default_rng(2).integers(0, 65535, (512, 512), dtype=np.uint16, endpoint=True)
    assert len(_wire(noise)[1]) < noise.nbytes * 1.01


@pytest.mark.parametrize("index", range(8))
def test_wire_chunk_is_the_chunk_hdf5plugin_stores(index: int, tmp_path: Path) -> None:
    array = _frames()[index]
    reference = _hdf5plugin_chunk(array, tmp_path / "ref.h5")
    assert _wire(array)[1] == reference
    assert bytes(memoryview(Codec("bitshuffle-lz4").compress(array)).cast("B")) == reference


def test_raw_frames_are_unchanged() -> None:
    array = _frames()[1]
    parts = _wire(array, encoding="none")
    assert "encoding" not in parts[0].decode()
    msg = decode(parts, max_payload_bytes=LIMIT)
    assert msg.encoding is None
    np.testing.assert_array_equal(msg.array, array)


def _reject(parts: list[bytes], limit: int = LIMIT) -> str:
    with pytest.raises(ProtocolError) as e:
        decode(parts, max_payload_bytes=limit)
    return e.value.kind


def _with_header(parts: list[bytes], **changes: object) -> list[bytes]:
    import json

    header = json.loads(parts[0])
    header.update(changes)
    return [json.dumps(header).encode(), parts[1]]


def test_lying_sizes_are_rejected_before_decompressing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object) -> int:
        raise AssertionError("decompressed a chunk that should have been refused")

    array = _frames()[2]
    parts = _wire(array)
    monkeypatch.setattr(bitshuffle._library(), "decompress", never)
    # a chunk whose declared decoded size is not the shape's (a decompression bomb: a small
    # shape that passes the size limit, a chunk that says it holds 1 GB)
    bomb = bytearray(parts[1])
    bomb[:8] = struct.pack(">Q", 1 << 30)
    assert _reject([parts[0], bytes(bomb)]) == "bad_encoding"
    # the header's shape larger than the limit: oversized, whatever the chunk says
    assert _reject(_with_header(parts, shape=[4096, 4096]), limit=1 << 20) == "oversized"
    # encoded_bytes that is not the payload's length, or missing
    assert _reject(_with_header(parts, encoded_bytes=len(parts[1]) + 1)) == "bad_length"
    assert _reject(_with_header(parts, encoded_bytes=None)) == "bad_field"
    assert _reject(_with_header(parts, encoding="zstd")) == "bad_encoding"
    # truncated, or padded: the blocks do not end where the payload does
    assert _reject(_with_header([parts[0], parts[1][:-5]], encoded_bytes=len(parts[1]) - 5)) == "bad_encoding"
    assert _reject(_with_header([parts[0], parts[1] + b"xx"], encoded_bytes=len(parts[1]) + 2)) == "bad_encoding"
    # a block that claims to run past the payload
    liar = bytearray(parts[1])
    liar[12:16] = struct.pack(">I", 1 << 20)
    assert _reject([parts[0], bytes(liar)]) == "bad_encoding"
    # an absurd block size
    odd = bytearray(parts[1])
    odd[8:12] = struct.pack(">I", 12)
    assert _reject([parts[0], bytes(odd)]) == "bad_encoding"


def test_corrupt_lz4_data_is_rejected_when_decoded() -> None:
    array = _frames()[1]
    parts = _wire(array)
    corrupt = bytearray(parts[1])
    corrupt[16:40] = bytes(24)  # inside the first LZ4 block: the structure still adds up
    msg = decode([parts[0], bytes(corrupt)], max_payload_bytes=LIMIT)
    with pytest.raises(ProtocolError) as e:
        _ = msg.array
    assert e.value.kind == "corrupt_payload"
    with pytest.raises(ProtocolError):
        frame_array(msg, FrameBuffers())


def test_random_damage_never_crashes() -> None:
    """Bytes flipped anywhere: refused at decode or at decompression, never a crash."""
    array = _frames()[1]
    parts = _wire(array)
    rng = np.random.default_rng(9)
    outcomes = set()
    for _ in range(300):
        damaged = bytearray(parts[1])
        for pos in rng.integers(0, len(damaged), 3):
            damaged[pos] = int(rng.integers(0, 256))
        try:
            msg = decode([parts[0], bytes(damaged)], max_payload_bytes=LIMIT)
            msg.decoded()
            outcomes.add("decoded")
        except ProtocolError as e:
            outcomes.add(e.kind)
    assert outcomes <= {"decoded", "bad_encoding", "corrupt_payload"}


def test_encode_chunk_refuses_a_chunk_that_is_not_the_frame() -> None:
    array = _frames()[1]
    header = data_header("frame", array, frame_id=0, seq=0, t_acq_ns=1)
    chunk = bitshuffle.encode(array)
    parts = encode_chunk(header, chunk)
    np.testing.assert_array_equal(decode(parts, max_payload_bytes=LIMIT).array, array)
    with pytest.raises(ValueError):
        encode_chunk({**header, "shape": [2, 2]}, chunk)


@pytest.mark.parametrize(
    ("setting", "bind", "expected"),
    [
        ("none", "0.0.0.0", "none"),
        ("bitshuffle-lz4", "127.0.0.1", "bitshuffle-lz4"),
        ("auto", "127.0.0.1", "none"),
        ("auto", "localhost", "none"),
        ("auto", "*", "bitshuffle-lz4"),
        ("auto", "192.168.1.20", "bitshuffle-lz4"),
    ],
)
def test_auto_compresses_when_the_stream_leaves_the_host(setting: str, bind: str, expected: str) -> None:
    cfg = PublisherConfig.model_validate({"wire_compression": setting, "bind": bind})
    assert cfg.wire_encoding() == expected


def test_dashboard_shows_what_the_link_carries() -> None:
    from framepipe.ops.dashboard import stage_rows
    from framepipe.runtime.status import ComponentStatus

    pub = {"component": "publisher", "role": "publisher", "published": 10, "bytes": 100}
    rec = {"component": "recorder-frames", "role": "recorder", "written": 10, "bytes": 100}
    compressed = {"wire_encoding": "bitshuffle-lz4", "wire_ratio": 1.634}
    rows = stage_rows([ComponentStatus.from_summary({**s, **compressed}) for s in (pub, rec)])
    assert all("wire bitshuffle-lz4 ×1.63" in r.notes for r in rows), [r.notes for r in rows]
    rows = stage_rows([ComponentStatus.from_summary({**s, "wire_encoding": "none"}) for s in (pub, rec)])
    assert not any("wire" in r.notes for r in rows)
