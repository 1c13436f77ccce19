"""Protocol round-trip and rejection of every malformed kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from framepipe.core.errors import ProtocolError
from framepipe.wire.protocol import (
    data_header,
    decode,
    encode_control,
    encode_data,
    from_ranges,
    to_ranges,
)

LIMIT = 64 * 1024 * 1024


def frame_msg(array: np.ndarray, **fields: object) -> list[bytes]:
    header = data_header("frame", array, frame_id=5, seq=9, t_acq_ns=123, **fields)
    return [bytes(p) for p in encode_data(header, array)]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "complex64"])
def test_round_trip_bytes(dtype: str) -> None:
    array = (np.arange(48).reshape(6, 8) % 251).astype(dtype)
    msg = decode(frame_msg(array, t_pub_ns=456), max_payload_bytes=LIMIT)
    assert msg.kind == "frame" and msg.frame_id == 5 and msg.seq == 9
    assert msg.header["t_pub_ns"] == 456
    assert msg.array is not None and msg.array.dtype == array.dtype
    np.testing.assert_array_equal(msg.array, array)


def test_round_trip_over_zmq_is_zero_copy_on_receive() -> None:
    array = np.random.default_rng(0).integers(0, 65535, (256, 256), dtype=np.uint16)
    ctx = zmq.Context()
    try:
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://t")
        b.connect("inproc://t")
        a.send_multipart(encode_data(data_header("frame", array, frame_id=1, seq=0, t_acq_ns=0), array), copy=False)
        parts = b.recv_multipart(copy=False)
        msg = decode(parts, max_payload_bytes=LIMIT)
        np.testing.assert_array_equal(msg.array, array)
        # the array is a view on the received message buffer, not a copy
        assert msg.array is not None and not msg.array.flags.owndata
        a.close(0)
        b.close(0)
    finally:
        ctx.term()


def test_control_round_trip_with_topic() -> None:
    parts = encode_control("ack", topic=b"ack", ids=to_ranges([1, 2, 3, 7]))
    msg = decode(parts, max_payload_bytes=LIMIT, topic=True)
    assert msg.kind == "ack" and from_ranges(msg.header["ids"]) == [1, 2, 3, 7]


def _tamper(header_edit: dict[str, object] | None = None, drop: str | None = None) -> list[bytes]:
    array = np.zeros((4, 4), np.uint16)
    parts = frame_msg(array)
    header = json.loads(parts[0])
    if drop:
        del header[drop]
    header.update(header_edit or {})
    return [json.dumps(header).encode(), parts[1]]


@pytest.mark.parametrize(
    ("parts", "kind"),
    [
        ([b"\x00\xff garbage"], "garbage"),
        ([b"[1,2,3]"], "garbage"),
        (_tamper({"v": 99}), "bad_version"),
        (_tamper(drop="v"), "bad_version"),
        (_tamper({"kind": "pickle"}), "bad_kind"),
        (_tamper(drop="frame_id"), "missing_field"),
        (_tamper(drop="shape"), "missing_field"),
        (_tamper({"frame_id": "7"}), "bad_field"),
        (_tamper({"frame_id": True}), "bad_field"),
        (_tamper({"dtype": "object"}), "bad_dtype"),
        (_tamper({"dtype": "float64"}), "bad_dtype"),
        (_tamper({"shape": [4, 4, 4, 4]}), "bad_shape"),
        (_tamper({"shape": [-4, -4]}), "bad_shape"),
        (_tamper({"shape": [0, 4]}), "bad_shape"),
        (_tamper({"shape": [10**9, 10**9]}), "bad_shape"),
        (_tamper({"shape": [4, 5]}), "bad_length"),  # truncated payload
        (_tamper({"shape": [4, 3]}), "bad_length"),  # oversized payload
        (_tamper({"shape": [60000, 60000]}), "oversized"),  # over the size limit
        (_tamper()[:1], "bad_framing"),  # data kind without payload
        ([*_tamper(), b"extra"], "bad_framing"),
        ([b"{" + b" " * 70000 + b"}"], "oversized"),
        ([*encode_control("eos"), b"payload"], "bad_framing"),
    ],
)
def test_malformed_is_rejected_with_reason(parts: list[bytes], kind: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(parts, max_payload_bytes=LIMIT)
    assert info.value.kind == kind


def test_sender_refuses_what_a_receiver_would_reject() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        arr = np.zeros((8, 8), np.uint16)[:, ::2]
        encode_data(data_header("frame", arr, frame_id=0, seq=0, t_acq_ns=0), arr)
    with pytest.raises(ValueError, match="not allowed"):
        arr64 = np.zeros((2, 2), np.float64)
        encode_data(data_header("frame", arr64, frame_id=0, seq=0, t_acq_ns=0), arr64)


def test_ranges_round_trip_and_hostile_ranges() -> None:
    ids = [0, 1, 2, 5, 9, 10]
    assert to_ranges(ids) == [[0, 2], [5, 5], [9, 10]]
    assert from_ranges(to_ranges(ids)) == ids
    for bad in ("x", [[3, 1]], [[1]], [[-1, 2]], [["a", "b"]], [[True, 2]]):
        with pytest.raises(ProtocolError):
            from_ranges(bad)
    with pytest.raises(ProtocolError, match="more than"):
        from_ranges([[0, 10**12]])
