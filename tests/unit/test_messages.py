"""Typed control messages: every model round-trips through the protocol, every malformed
variant is a ProtocolError with its counter name, refusals say why."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import zmq

from framepipe.core.errors import ProtocolError
from framepipe.wire import protocol
from framepipe.wire.messages import (
    MAX_NAME,
    MAX_NAMES,
    MAX_RANGES,
    MAX_TEXT,
    MODELS,
    Ack,
    Acquire,
    AcquisitionStart,
    AcquisitionState,
    Bye,
    Command,
    ControlModel,
    Done,
    EndOfStream,
    EndOfStreamRequest,
    ErrorReply,
    Heartbeat,
    Hello,
    StatusReply,
    StatusRequest,
    Stop,
    Welcome,
    WorkersAlive,
)
from framepipe.wire.protocol import data_header, decode, encode_control, encode_data, from_ranges
from framepipe.wire.sync import SyncServer

LIMIT = 1 << 20

EXAMPLES: list[ControlModel] = [
    Hello(name="recorder-frames", t_send_ns=1_700_000_000_000_000_000),
    Bye(name="recorder-frames", t_send_ns=5, written=10, gaps=0, missing=0, complete=True, error=None),
    Bye(name="ventilator", received=99, gaps=1),
    AcquisitionStart(
        acquisition=3, name="sample-a", run="lab", run_id="20261203T050000Z", frames=100, settings={"fps": 50.0}
    ),
    Acquire(name="operator", frames=100, acquisition_name="sample-a", camera={"exposure_us": 2000.0}),
    Command(name="operator", action="wait", acquisition=3),
    AcquisitionState(state="idle", summary={"id": 3, "complete": True}, history=[{"id": 3}]),
    EndOfStreamRequest(name="ventilator", t_send_ns=7, frame_ids=[[0, 99], [101, 250]], unacknowledged=[[250, 250]]),
    EndOfStream(stream="frames", reason="complete", seq_last=249, count=250, frame_ids=[[0, 249]], camera_lost=0),
    EndOfStream(stream="results", reason="stopped", seq_last=-1, count=0, frame_ids=[]),
    Ack(ids=[[1, 3], [7, 7]]),
    Stop(reason="complete"),
    WorkersAlive(alive=["worker-a-1", "worker-b-2"]),
    Heartbeat(name="worker-a-1", processed=12),
    StatusRequest(cmd="stop"),
    StatusRequest(),
    Welcome(stream="frames", seq=0, camera={"source": "synthetic", "exposure_us": 125.0}, t_server_ns=3),
    Welcome(workers=["worker-a-1"], t_server_ns=3),
    Done(received=250, missing=0, duplicates=2, acknowledged_elsewhere=0, t_server_ns=4),
    StatusReply(ok=True, status={"name": "sink", "counters": {"received": 3}}),
    ErrorReply(reason="hello message: name: Field required", t_server_ns=4),
]


def _parts(header: dict[str, Any]) -> list[bytes]:
    return [json.dumps({"v": 1, **header}).encode()]


def test_examples_cover_every_model() -> None:
    assert {type(m) for m in EXAMPLES} == set(MODELS)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_kind_round_trips(message: ControlModel) -> None:
    msg = decode(encode_control(message), max_payload_bytes=LIMIT)
    assert type(msg.control) is type(message) and msg.control == message
    assert msg.kind == message.kind and msg.header["kind"] == message.kind and msg.array is None
    # with a topic frame too (the sink's control stream)
    again = decode(encode_control(message, topic=b"t"), max_payload_bytes=LIMIT, topic=True)
    assert again.control == message


def test_wire_form_is_the_plain_header() -> None:
    """v and kind first, absent fields not sent: what the hand-built headers looked like."""
    (frame,) = encode_control(Stop(reason="complete"))
    assert frame == b'{"v":1,"kind":"stop","reason":"complete"}'
    (frame,) = encode_control(Welcome(stream="results", seq=4))
    assert json.loads(frame) == {"v": 1, "kind": "welcome", "stream": "results", "seq": 4}


def test_kind_and_fields_build_the_same_model() -> None:
    assert encode_control("ack", topic=b"ack", ids=[[1, 3]]) == encode_control(Ack(ids=[[1, 3]]), topic=b"ack")
    msg = decode(encode_control("eos", name="ventilator", frame_ids=[[0, 4]]), max_payload_bytes=LIMIT)
    assert isinstance(msg.control, EndOfStreamRequest) and from_ranges(msg.control.frame_ids) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("header", "reason", "field"),
    [
        # unknown kind
        ({"kind": "pickle", "name": "x"}, "bad_kind", ""),
        ({"kind": 7}, "bad_kind", ""),
        # missing field
        ({"kind": "hello"}, "missing_field", "name"),
        ({"kind": "ack"}, "missing_field", "ids"),
        ({"kind": "eos", "name": "ventilator"}, "missing_field", "frame_ids"),
        ({"kind": "error", "ok": False}, "missing_field", "reason"),
        ({"kind": "status", "status": {}}, "unknown_field", "status"),  # a reply without ok is a request
        # wrong type (strict: no strings for ints, no booleans, no floats)
        ({"kind": "heartbeat", "name": 5}, "bad_field", "name"),
        ({"kind": "heartbeat", "name": "w", "processed": True}, "bad_field", "processed"),
        ({"kind": "hello", "name": "x", "t_send_ns": "7"}, "bad_field", "t_send_ns"),
        ({"kind": "eos", "count": 1.5}, "bad_field", "count"),
        ({"kind": "bye", "name": "x", "complete": 1}, "bad_field", "complete"),
        ({"kind": "ack", "ids": "0-3"}, "bad_field", "ids"),
        ({"kind": "status", "alive": "w"}, "bad_field", "alive"),
        ({"kind": "status", "cmd": "reboot"}, "bad_field", "cmd"),
        ({"kind": "error", "ok": True, "reason": "x"}, "bad_field", "ok"),
        ({"kind": "hello", "name": ""}, "bad_field", "name"),
        # negative or out-of-range ids, malformed ranges
        ({"kind": "ack", "ids": [[-1, 2]]}, "bad_field", "ids"),
        ({"kind": "ack", "ids": [[0, 1 << 63]]}, "bad_field", "ids"),
        ({"kind": "ack", "ids": [[3, 1]]}, "bad_field", "ids"),
        ({"kind": "ack", "ids": [[1]]}, "bad_field", "ids"),
        ({"kind": "ack", "ids": [[1, 2, 3]]}, "bad_field", "ids"),
        ({"kind": "eos", "seq_last": -2}, "bad_field", "seq_last"),
        ({"kind": "done", "received": -1}, "bad_field", "received"),
        # oversized: lists, id totals, names, dicts
        ({"kind": "status", "alive": ["w"] * (MAX_NAMES + 1)}, "oversized", "alive"),
        ({"kind": "heartbeat", "name": "w" * (MAX_NAME + 1)}, "oversized", "name"),
        ({"kind": "welcome", "camera": {str(i): i for i in range(300)}}, "oversized", "camera"),
        # a field no model declares
        ({"kind": "hello", "name": "x", "exec": "rm -rf /"}, "unknown_field", "exec"),
        ({"kind": "eos", "stream": "frames", "unacknowledged": []}, "unknown_field", "unacknowledged"),
    ],
)
def test_malformed_control_is_a_protocol_error_with_its_counter(
    header: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(_parts(header), max_payload_bytes=LIMIT)
    assert info.value.kind == reason, str(info.value)
    assert field in str(info.value)


def test_range_lists_are_bounded_by_the_model_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past what a 64 KiB header holds; the model's own bound, if the header limit grows."""
    monkeypatch.setattr(protocol, "MAX_HEADER_BYTES", 1 << 20)
    ranges = [[2 * i, 2 * i] for i in range(MAX_RANGES + 1)]
    with pytest.raises(ProtocolError) as info:
        decode(_parts({"kind": "eos", "name": "ventilator", "frame_ids": ranges}), max_payload_bytes=LIMIT)
    assert info.value.kind == "oversized" and "frame_ids" in str(info.value)
    # the ids a range list stands for are bounded where they are expanded
    msg = decode(_parts({"kind": "ack", "ids": [[0, 1 << 40]]}), max_payload_bytes=LIMIT)
    assert isinstance(msg.control, Ack)
    with pytest.raises(ProtocolError) as info:
        from_ranges(msg.control.ids)
    assert info.value.kind == "oversized"


def test_error_reply_decodes_with_its_reason_on_one_line() -> None:
    msg = decode(encode_control(ErrorReply(reason="unexpected ack\nrequest   here")), max_payload_bytes=LIMIT)
    assert isinstance(msg.control, ErrorReply)
    assert msg.control.reason == "unexpected ack request here"
    assert msg.header["ok"] is False  # a client that only checks ok sees the refusal
    long = ErrorReply(reason="x" * (10 * MAX_TEXT))
    assert len(long.reason) == MAX_TEXT


def test_sender_refuses_what_a_receiver_would_reject() -> None:
    with pytest.raises(ValueError, match="ack"):
        encode_control("ack", ids=[[2, 1]])
    with pytest.raises(ValueError, match="name"):
        encode_control("heartbeat", name="")
    with pytest.raises(ValueError, match="not a control kind"):
        encode_control("frame")
    with pytest.raises(TypeError):
        encode_control(Ack(ids=[]), ids=[[0, 1]])


def test_data_headers_are_not_validated_by_the_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames and results keep the hand-written checks: they run on every frame."""

    class Refuse:
        def validate_python(self, _: object) -> None:
            raise AssertionError("a data header went through the control models")

    monkeypatch.setattr(protocol, "CONTROL", Refuse())
    array = np.zeros((4, 4), np.uint16)
    parts = encode_data(data_header("frame", array, frame_id=1, seq=0, t_acq_ns=0), array)
    msg = decode(parts, max_payload_bytes=LIMIT)
    assert msg.kind == "frame" and msg.control is None


def test_sync_server_refuses_a_malformed_request_saying_why() -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    router, req = ctx.socket(zmq.ROUTER), ctx.socket(zmq.REQ)
    try:
        router.bind("inproc://sync")
        req.connect("inproc://sync")
        server = SyncServer(router, max_payload=LIMIT)
        req.send_multipart(_parts({"kind": "hello", "name": 3}))
        with pytest.raises(ProtocolError) as info:
            server.receive()
        assert info.value.kind == "bad_field"
        assert req.poll(2000), "the refused request got no answer"
        reply = decode(req.recv_multipart(), max_payload_bytes=0)
        assert isinstance(reply.control, ErrorReply) and "name" in reply.control.reason
        assert reply.control.t_server_ns is not None
        # a valid request comes back typed, and is answered with a typed reply
        req.send_multipart(encode_control("hello", name="recorder-frames"))
        received = server.receive()
        assert received.message.control == Hello(name="recorder-frames")
        assert received.peer.user_id is None, "no CURVE, no identity"
        server.reply(received.identity, Welcome(stream="frames", seq=0))
        welcome = decode(req.recv_multipart(), max_payload_bytes=0).control
        assert isinstance(welcome, Welcome) and welcome.stream == "frames"
    finally:
        router.close(linger=0)
        req.close(linger=0)
        ctx.term()
