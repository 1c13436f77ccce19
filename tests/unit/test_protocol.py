"""Protocol round-trip and rejection of every malformed kind."""

from __future__ import annotations

import json
import random
import time
import tracemalloc

import numpy as np
import pytest
import zmq

from framepipe.core.errors import ProtocolError
from framepipe.wire.protocol import (
    MAX_HEADER_BYTES,
    MAX_HEADER_DEPTH,
    data_header,
    decode,
    encode_control,
    encode_data,
    from_ranges,
    ranges_from_wire,
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


def _nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


@pytest.mark.parametrize(
    "header",
    [
        b"[" * 5000 + b"]" * 5000,  # 10 KB, valid JSON: json.loads alone raises RecursionError
        b"[" * 10_000,  # unbalanced
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"v":1,"kind":"result","frame_id":1,"x":' + _nested(5000).encode() + b"}",
        b'{"v":1,"kind":"hello","name":"x","x":' + _nested(MAX_HEADER_DEPTH).encode() + b"}",  # 33 with the object
        b'[{"a":[' * 2000 + b"]}]" * 2000,
    ],
)
def test_deep_nesting_is_a_protocol_error_not_a_recursion_error(header: bytes) -> None:
    assert len(header) <= MAX_HEADER_BYTES
    with pytest.raises(ProtocolError) as info:
        decode([header], max_payload_bytes=LIMIT)
    assert info.value.kind == "bad_header"


def test_nesting_up_to_the_limit_is_not_refused_for_depth() -> None:
    # 31 inside the object: within the limit, so refused for what it is (an unknown field)
    header = b'{"v":1,"kind":"hello","name":"x","x":' + _nested(MAX_HEADER_DEPTH - 1).encode() + b"}"
    with pytest.raises(ProtocolError) as info:
        decode([header], max_payload_bytes=LIMIT)
    assert info.value.kind == "unknown_field"


@pytest.mark.parametrize(
    "text",
    ["[" * 5000, "]" * 40 + "[" * 40, '\\"[[[' + "[" * 100, '\\u005b"' + "[" * 100, "{[" * 1000],
)
def test_brackets_inside_strings_are_text(text: str) -> None:
    array = np.zeros((2, 2), np.uint16)
    parts = frame_msg(array, note=text, other=["[", "{"] * 10)
    assert parts[0].count(b"[") > MAX_HEADER_DEPTH  # the careful path, not the quick count
    msg = decode(parts, max_payload_bytes=LIMIT)
    assert msg.header["note"] == text and msg.frame_id == 5


_ALPHABET = b'[]{}"\\:,1 a'
_SOUP = bytes(_ALPHABET[b % len(_ALPHABET)] for b in range(256))


@pytest.mark.parametrize("seed", range(5))
def test_bracket_soup_only_ever_raises_protocol_errors(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        soup = rng.randbytes(rng.randrange(1, 20_000)).translate(_SOUP)
        with pytest.raises(ProtocolError):
            decode([soup], max_payload_bytes=LIMIT)


def _random_value(rng: random.Random, depth: int) -> object:
    """A JSON value nested exactly ``depth`` deep, with strings full of brackets and quotes."""
    if depth == 0:
        return rng.choice([1, -2.5, None, True, '[{\\"]}', "x" * rng.randrange(5)])
    inner = [_random_value(rng, rng.randrange(min(depth, 3))) for _ in range(rng.randrange(3))]
    inner.insert(rng.randrange(len(inner) + 1), _random_value(rng, depth - 1))
    if rng.random() < 0.5:
        return inner
    return {f"k{i}[": v for i, v in enumerate(inner)}


@pytest.mark.parametrize("seed", range(5))
def test_depth_is_judged_exactly(seed: int) -> None:
    """Against an oracle: refused for depth exactly when the header nests deeper than the limit."""
    rng = random.Random(seed)
    array = np.zeros((2, 2), np.uint16)
    tried = 0
    for _ in range(40):
        depth = rng.randrange(MAX_HEADER_DEPTH - 3, MAX_HEADER_DEPTH + 3)  # + 1 for the header object
        parts = frame_msg(array, extra=_random_value(rng, depth))
        if len(parts[0]) > MAX_HEADER_BYTES:
            continue
        tried += 1
        if depth + 1 > MAX_HEADER_DEPTH:
            with pytest.raises(ProtocolError, match="deeper"):
                decode(parts, max_payload_bytes=LIMIT)
        else:
            assert decode(parts, max_payload_bytes=LIMIT).header["extra"] == json.loads(parts[0])["extra"]
    assert tried >= 30


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_standard_numbers_are_refused(value: str) -> None:
    array = np.zeros((2, 2), np.uint16)
    header = frame_msg(array)[0].replace(b'"frame_id":5', b'"frame_id":5,"gain":' + value.encode())
    assert value.encode() in header
    with pytest.raises(ProtocolError) as info:
        decode([header, bytes(8)], max_payload_bytes=LIMIT)
    assert info.value.kind == "bad_header"
    ok = frame_msg(array, gain=1.5e300)  # a finite float is fine
    assert decode(ok, max_payload_bytes=LIMIT).header["gain"] == 1.5e300


def test_a_header_one_byte_over_the_limit_is_oversized() -> None:
    pad = MAX_HEADER_BYTES - len('{"v":1,"pad":""}')
    at_limit = ('{"v":1,"pad":"' + "a" * pad + '"}').encode()
    assert len(at_limit) == MAX_HEADER_BYTES
    with pytest.raises(ProtocolError) as info:
        decode([at_limit], max_payload_bytes=LIMIT)
    assert info.value.kind == "bad_kind"  # read, then refused for what it says
    with pytest.raises(ProtocolError) as info:
        decode([at_limit[:-2] + b'a"}'], max_payload_bytes=LIMIT)
    assert info.value.kind == "oversized"


def test_headers_that_are_not_utf8_json_are_garbage() -> None:
    for raw in (b'{"v":1,"kind":"\xff"}', '{"v":1}'.encode("utf-16"), b"{'v': 1}"):
        with pytest.raises(ProtocolError) as info:
            decode([raw], max_payload_bytes=LIMIT)
        assert info.value.kind == "garbage"


def test_from_ranges_counts_every_range_before_expanding_any() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="more than"):
            from_ranges([[0, 9_999_999], [10**8, 10**8]])  # the first alone is within the limit
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes allocated for a refused id set"


def test_ranges_from_wire_never_expands() -> None:
    t0 = time.perf_counter()
    huge = ranges_from_wire([[0, 2**62], [2**62 + 2, 2**63 - 1]])
    assert time.perf_counter() - t0 < 0.1
    assert len(huge) == 2**63 - 1 and huge.ranges() == [[0, 2**62], [2**62 + 2, 2**63 - 1]]
    assert (2**62 + 1) not in huge and 2**62 in huge
    assert ranges_from_wire(to_ranges([0, 1, 2, 5, 9, 10])).ranges() == [[0, 2], [5, 5], [9, 10]]
    assert ranges_from_wire([]).ranges() == []
    # unsorted, overlapping and touching ranges are merged
    assert ranges_from_wire([[9, 10], [0, 3], [2, 5], [6, 6]]).ranges() == [[0, 6], [9, 10]]


@pytest.mark.parametrize(
    ("ranges", "kind"),
    [
        ("x", "bad_field"),
        ({"0": 3}, "bad_field"),
        ([[3, 1]], "bad_field"),
        ([[1]], "bad_field"),
        ([[1, 2, 3]], "bad_field"),
        ([[-1, 2]], "bad_field"),
        ([["a", "b"]], "bad_field"),
        ([[True, 2]], "bad_field"),
        ([[0, 1.5]], "bad_field"),
        ([[0, 2**63]], "bad_field"),  # beyond an int64 column
        ([[0, 1]] * 11, "oversized"),
    ],
)
def test_ranges_from_wire_refuses_hostile_ranges(ranges: object, kind: str) -> None:
    with pytest.raises(ProtocolError) as info:
        ranges_from_wire(ranges, max_ranges=10)
    assert info.value.kind == kind
