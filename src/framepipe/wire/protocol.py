"""The wire format: the only module that knows how messages look on a socket.

A data message is two ZeroMQ frames::

    [ header: UTF-8 JSON object ][ payload: the raw C-contiguous array buffer ]

A control message (end of stream, acknowledgements, stop, heartbeats, sync) is one
frame, the header alone. On the sink's control stream a topic frame comes first so
workers can subscribe to ``stop`` only. No pickle, ever: nothing received is executed.

Every received header is validated (:func:`decode`): protocol version, kind, then for a
control message its model (``wire.messages``: typed fields, bounds, no unknown fields),
which the decoded :class:`Message` carries as ``control``; for a data message the
required fields and their types, dtype from an allow-list, a sane shape, payload length
equal to shape × itemsize, and a size limit — checked by hand, not by pydantic: they run
on every frame. Failures raise :class:`ProtocolError` whose ``kind`` is the reason counter
a component increments. See docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq
from pydantic import ValidationError

from framepipe.core.errors import ProtocolError
from framepipe.wire.messages import CONTROL, Control, ControlModel, control_message, first_error
from framepipe.wire.messages import CONTROL_KINDS as CONTROL_KINDS
from framepipe.wire.messages import VERSION as VERSION

#: dtypes accepted on the wire, for frames and results
WIRE_DTYPES = frozenset({"uint8", "uint16", "float32", "complex64"})

#: data messages carry a payload; control messages do not
DATA_KINDS = frozenset({"frame", "result"})

#: control-stream topics
TOPIC_ACK = b"ack"
TOPIC_STOP = b"stop"
TOPIC_WORKERS = b"workers"

#: a subscriber also subscribes to this prefix + its name: the publisher's XPUB sees
#: that arrive and knows *this* subscriber's subscription is in place (no message
#: starts with 0xff, so it never matches data)
SUBSCRIBER_TOPIC = b"\xffsub:"


def subscriber_topic(name: str) -> bytes:
    """The per-subscriber marker topic (see SUBSCRIBER_TOPIC)."""
    return SUBSCRIBER_TOPIC + name.encode()


MAX_HEADER_BYTES = 64 * 1024
MAX_NDIM = 3
MAX_DIM = 1 << 16

# Fields every data message carries, with their JSON types.
_DATA_FIELDS: dict[str, type | tuple[type, ...]] = {
    "frame_id": int,
    "seq": int,
    "t_acq_ns": int,
    "shape": list,
    "dtype": str,
}


@dataclasses.dataclass(slots=True)
class Message:
    """A decoded message: its header fields and, for data kinds, the array (read-only view);
    for control kinds the validated model (``control``)."""

    kind: str
    #: the header as received (control messages too, for code that reads fields by name)
    header: dict[str, Any]
    array: np.ndarray | None = None
    #: the received payload frame, kept so it can be forwarded without a copy
    payload: Any = None
    #: a control message as its model (wire.messages); None for data kinds
    control: Control | None = None

    @property
    def frame_id(self) -> int:
        return int(self.header["frame_id"])

    @property
    def seq(self) -> int:
        return int(self.header["seq"])


def _dumps(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def data_header(
    kind: str, array: np.ndarray, *, frame_id: int, seq: int, t_acq_ns: int, **fields: Any
) -> dict[str, Any]:
    """The header of a data message describing ``array``."""
    if kind not in DATA_KINDS:
        raise ValueError(f"not a data kind: {kind}")
    return {
        "v": VERSION,
        "kind": kind,
        "frame_id": int(frame_id),
        "seq": int(seq),
        "t_acq_ns": int(t_acq_ns),
        "shape": list(array.shape),
        "dtype": array.dtype.name,
        **fields,
    }


def encode_data(header: dict[str, Any], array: np.ndarray) -> list[Any]:
    """Frames of a data message: the header and the array buffer itself (no copy).

    The array must be C-contiguous and of an allowed dtype; checked here, before
    anything is sent, so a sender's bug never reaches a receiver.
    """
    if array.dtype.name not in WIRE_DTYPES:
        raise ValueError(f"dtype {array.dtype.name} is not allowed on the wire")
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous to be sent without a copy")
    if list(array.shape) != header["shape"] or array.dtype.name != header["dtype"]:
        raise ValueError("header does not describe the array")
    return [_dumps(header), memoryview(array).cast("B")]  # type: ignore[arg-type]


def encode_control(message: ControlModel | str, topic: bytes | None = None, **fields: Any) -> list[bytes]:
    """Frames of a control message, optionally prefixed by a topic frame.

    ``message`` is a model of wire.messages, or a kind whose model is built from
    ``fields`` (ValueError for what a receiver would refuse: a sender's bug).
    """
    if isinstance(message, str):
        message = control_message(message, **fields)
    elif fields:
        raise TypeError("fields are given by the model")
    frames = [_dumps(message.model_dump(exclude_none=True))]
    return [topic, *frames] if topic is not None else frames


#: pydantic error types → rejection counters (any other type is ``bad_field``)
_REJECTIONS = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "too_long": "oversized",
    "string_too_long": "oversized",
    "oversized": "oversized",
    "union_tag_invalid": "bad_kind",
    "union_tag_not_found": "bad_kind",
}


def _control(kind: str, header: dict[str, Any]) -> Control:
    """The model of a control header; ProtocolError names the first field at fault."""
    try:
        return CONTROL.validate_python(header)
    except ValidationError as e:
        field, problem, error_type = first_error(e)
        reason = _REJECTIONS.get(error_type, "bad_field")
        raise ProtocolError(f"{kind} message: {field}: {problem}", kind=reason) from None


def _buffer_of(part: Any) -> memoryview:
    if isinstance(part, zmq.Frame):
        return part.buffer
    return memoryview(part)


def decode(parts: Sequence[Any], *, max_payload_bytes: int, topic: bool = False) -> Message:
    """Validate and decode a received multipart message (frames or bytes).

    ``topic=True`` expects (and strips) a leading topic frame. Raises ProtocolError.
    """
    if topic:
        if len(parts) < 2:
            raise ProtocolError("missing topic or header", kind="bad_framing")
        parts = parts[1:]
    if not 1 <= len(parts) <= 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(parts)}", kind="bad_framing")
    raw = _buffer_of(parts[0])
    if raw.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {raw.nbytes} bytes is too large", kind="oversized")
    try:
        header = json.loads(raw.tobytes())
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError("header is not JSON", kind="garbage") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object", kind="garbage")
    if header.get("v") != VERSION or type(header.get("v")) is not int:  # not 1.0, not true
        raise ProtocolError(f"protocol version {header.get('v')!r}, expected {VERSION}", kind="bad_version")
    kind = header.get("kind")
    if isinstance(kind, str) and kind in CONTROL_KINDS:
        if len(parts) != 1:
            raise ProtocolError(f"{kind} message must not carry a payload", kind="bad_framing")
        return Message(kind=kind, header=header, control=_control(kind, header))
    if kind not in DATA_KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}", kind="bad_kind")
    for field, typ in _DATA_FIELDS.items():
        value = header.get(field)
        if value is None:
            raise ProtocolError(f"missing field {field!r}", kind="missing_field")
        if not isinstance(value, typ) or isinstance(value, bool):
            raise ProtocolError(f"field {field!r} has the wrong type", kind="bad_field")
        # ids, sequence numbers and timestamps end up in int64 columns and in id ranges
        if isinstance(value, int) and not 0 <= value < 1 << 63:
            raise ProtocolError(f"field {field!r} is out of range", kind="bad_field")
    if len(parts) != 2:
        raise ProtocolError(f"{kind} message without payload", kind="bad_framing")
    dtype_name = header["dtype"]
    if dtype_name not in WIRE_DTYPES:
        raise ProtocolError(f"dtype {dtype_name!r} is not allowed", kind="bad_dtype")
    shape = header["shape"]
    if not 1 <= len(shape) <= MAX_NDIM or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_DIM for n in shape
    ):
        raise ProtocolError(f"absurd shape {shape!r}", kind="bad_shape")
    dtype = np.dtype(dtype_name)
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_payload_bytes:
        raise ProtocolError(f"payload of {expected} bytes exceeds the limit of {max_payload_bytes}", kind="oversized")
    payload = parts[1]
    buf = _buffer_of(payload)
    if buf.nbytes != expected:
        raise ProtocolError(
            f"payload is {buf.nbytes} bytes, shape {shape} × {dtype.itemsize} needs {expected}", kind="bad_length"
        )
    array = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return Message(kind=kind, header=header, array=array, payload=payload)


def encode_forward(header: dict[str, Any], payload: Any) -> list[Any]:
    """Frames to re-send a received data message with an edited header; the payload
    (a received zmq.Frame or buffer, already validated) is passed on without a copy."""
    return [_dumps(header), payload]


def to_ranges(ids: Sequence[int]) -> list[list[int]]:
    """Sorted ids as inclusive ranges: [0,1,2,5] → [[0,2],[5,5]] (compact for headers)."""
    out: list[list[int]] = []
    for i in sorted(ids):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        elif not out or i > out[-1][1]:
            out.append([i, i])
    return out


def from_ranges(ranges: Any, *, limit: int = 10_000_000) -> list[int]:
    """Inverse of :func:`to_ranges`, validating what came from the network (at most ``limit`` ids)."""
    if not isinstance(ranges, list):
        raise ProtocolError("ranges must be a list", kind="bad_field")
    ids: list[int] = []
    total = 0
    for item in ranges:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            or item[0] > item[1]
            or item[0] < 0
        ):
            raise ProtocolError(f"bad range {item!r}", kind="bad_field")
        total += item[1] - item[0] + 1
        if total > limit:
            raise ProtocolError(f"more than {limit} ids in ranges", kind="oversized")
        ids.extend(range(item[0], item[1] + 1))
    return ids
