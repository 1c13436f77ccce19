"""The wire format: the only module that knows how messages look on a socket.

A frame is two ZeroMQ frames::

    [ header: UTF-8 JSON object ][ payload: the raw C-contiguous array buffer ]

A result is the header, listing the processor's outputs (``outputs``: name, dtype, shape;
``[]`` for a scalar), then one payload per output, in that order::

    [ header ][ output 0 ][ output 1 ] ...

A frame that failed in the processor is a result with ``outputs: []``, no payload, and
``failed``: the exception's one line.

A control message (end of stream, acknowledgements, stop, heartbeats, sync) is one
frame, the header alone. On the sink's control stream a topic frame comes first so
workers can subscribe to ``stop`` only. No pickle, ever: nothing received is executed.

Every received header is validated (:func:`decode`): protocol version, kind, then for a
control message its model (``wire.messages``: typed fields, bounds, no unknown fields),
which the decoded :class:`Message` carries as ``control``; for a data message the
required fields and their types, dtype from an allow-list, a sane shape, payload length
equal to shape × itemsize (or, for a compressed payload, its declared length and a chunk
whose decoded size is shape × itemsize), and a size limit — checked by hand, not by pydantic: they run
on every frame. Failures raise :class:`ProtocolError` whose ``kind`` is the reason counter
a component increments. See docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import zmq
from pydantic import ValidationError

from framepipe.core import bitshuffle
from framepipe.core.errors import ProtocolError
from framepipe.core.ledger import IdRanges
from framepipe.core.outputs import MAX_OUTPUTS, RESULT_DTYPES, Output
from framepipe.wire.messages import CONTROL, Control, ControlModel, control_message, first_error
from framepipe.wire.messages import CONTROL_KINDS as CONTROL_KINDS
from framepipe.wire.messages import VERSION as VERSION
from framepipe.wire.ring import NAME_RE as RING_NAME

#: dtypes accepted on the wire for frames (and for results of the FFT family)
WIRE_DTYPES = frozenset({"uint8", "uint16", "float32", "complex64"})
#: dtypes accepted for a result's outputs
RESULT_WIRE_DTYPES = RESULT_DTYPES
#: longest ``failed`` text a result may carry
MAX_FAILED_TEXT = 1000

#: how a data payload may be encoded (``encoding`` in its header; absent: the raw array)
ENCODINGS = ("none", bitshuffle.NAME)

#: data messages carry a payload; control messages do not
DATA_KINDS = frozenset({"frame", "result"})
#: a frame in a same-host shared-memory ring: the frame's header, plus ``ring``, ``slot``
#: and ``gen``, and no payload (wire/ring.py); decoded as a ``frame`` whose pixels the
#: receiver reads from the ring
SLOT_KIND = "slot"
#: the kinds a broadcast stream carries besides its data (what a subscriber that takes
#: its frames from a ring subscribes to, with SLOT_KIND: the pixel frames never reach it)
STREAM_CONTROL_KINDS = ("start", "eos", "heartbeat")

#: control-stream topics
TOPIC_ACK = b"ack"
TOPIC_STOP = b"stop"
TOPIC_WORKERS = b"workers"

#: a subscriber also subscribes to this prefix + its name: the publisher's XPUB sees
#: that arrive and knows *this* subscriber's subscription is in place (no message
#: starts with 0xff, so it never matches data)
SUBSCRIBER_TOPIC = b"\xffsub:"


def kind_topic(kind: str) -> bytes:
    """The prefix every message of ``kind`` starts with (headers begin ``{"v":…,"kind":…``),
    so a SUB can subscribe to some kinds only."""
    return _dumps({"v": VERSION, "kind": kind})[:-1]


def subscriber_topic(name: str) -> bytes:
    """The per-subscriber marker topic (see SUBSCRIBER_TOPIC)."""
    return SUBSCRIBER_TOPIC + name.encode()


#: a subscriber that takes its frames from the publisher's ring also subscribes to this
#: prefix + its name: it tells the publisher so, and, withdrawn by XPUB when its
#: connection closes, that it is gone (its slots are free)
RING_TOPIC = b"\xffring:"


def ring_topic(name: str) -> bytes:
    """The ring marker of subscriber ``name`` (see RING_TOPIC)."""
    return RING_TOPIC + name.encode()


MAX_HEADER_BYTES = 64 * 1024
#: deepest nesting of arrays and objects a header may have (ours have 3: eos id ranges);
#: checked before json.loads, whose C scanner recurses and raises RecursionError at ~1000
MAX_HEADER_DEPTH = 32
#: most ranges a wire id set may hold (a million holes: ~16 MB of ranges, never the ids)
MAX_RANGES = 1_000_000
MAX_NDIM = 3
MAX_DIM = 1 << 16

# Fields every data message carries, with their JSON types.
_DATA_FIELDS: dict[str, type | tuple[type, ...]] = {
    "frame_id": int,
    "seq": int,
    "t_acq_ns": int,
}
#: and a frame's (a result lists its outputs instead)
_FRAME_FIELDS: dict[str, type | tuple[type, ...]] = {"shape": list, "dtype": str}


@dataclasses.dataclass(slots=True)
class Message:
    """A decoded message: its header fields and, for data kinds, the array (read-only);
    for control kinds the validated model (``control``).

    A compressed payload (``encoding``) is decoded on first use of :attr:`array` (or into
    a caller's buffer by :meth:`decoded`), so a component that forwards or stores the
    chunk as it came never pays for decompression. Its structure was checked by
    :func:`decode`; the LZ4 data itself is checked as it is decompressed, and a payload
    that does not decode raises ProtocolError (``corrupt_payload``) there.
    """

    kind: str
    #: the header as received (control messages too, for code that reads fields by name)
    header: dict[str, Any]
    #: the raw payload as an array; for an encoded one, its decoded form once decoded
    _array: np.ndarray | None = None
    #: the received payload frame, kept so it can be forwarded without a copy
    payload: Any = None
    #: a control message as its model (wire.messages); None for data kinds
    control: Control | None = None
    #: a result's declared outputs and their arrays (read-only views), in order
    outputs: list[Output] = dataclasses.field(default_factory=list)
    arrays: list[np.ndarray] = dataclasses.field(default_factory=list)
    #: a result's received payload frames, one per output, to forward without a copy
    payloads: tuple[Any, ...] = ()

    @property
    def failed(self) -> str | None:
        """A result of a frame the processor failed on: why, in one line (else None)."""
        value = self.header.get("failed") if self.kind == "result" else None
        return value if isinstance(value, str) else None

    def schema(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """A result's outputs as comparable tuples (name, dtype, shape)."""
        return [(o.name, o.dtype, o.shape) for o in self.outputs]

    #: how the payload is encoded (``bitshuffle-lz4``); None: the raw array
    encoding: str | None = None
    #: a frame that travelled as a ring descriptor: (ring, slot, generation); its array is
    #: set by the receiver that read the slot (:meth:`in_ring`)
    ring_slot: tuple[str, int, int] | None = None

    def in_ring(self, arrays: list[np.ndarray]) -> None:
        """The data of a descriptor (a frame's pixels; a result's outputs, in order), read
        in place from its ring by the receiver. A frame the publisher compressed is its
        chunk's bytes (``encoding``): checked like a received chunk (ProtocolError
        ``bad_encoding``), decoded when used."""
        if self.encoding is not None:
            chunk = arrays[0]
            view = memoryview(chunk).cast("B")  # type: ignore[arg-type]
            try:
                bitshuffle.check(view, self.header["shape"], np.dtype(self.header["dtype"]))
            except bitshuffle.ChunkError as e:
                raise ProtocolError(f"{self.encoding} chunk in the ring: {e}", kind="bad_encoding") from None
            self.payload = chunk
            return
        for array in arrays:
            array.flags.writeable = False
        self._array = arrays[0]
        if self.kind == "result":
            self.arrays = arrays

    @property
    def frame_id(self) -> int:
        return int(self.header["frame_id"])

    @property
    def seq(self) -> int:
        return int(self.header["seq"])

    @property
    def array(self) -> np.ndarray | None:
        """The data as an array (decoded once, on first use, read-only); None for control
        messages. ProtocolError (``corrupt_payload``) if the LZ4 data does not decode."""
        if self._array is None and self.encoding is not None:
            array = self._decode(None)
            array.flags.writeable = False
            self._array = array
        return self._array

    def decoded(self, out: np.ndarray | None = None) -> np.ndarray:
        """The data as an array; an encoded payload not yet decoded is decompressed into
        ``out`` when given (a raw payload is its read-only view: nothing to copy)."""
        if out is not None and self._array is None and self.encoding is not None:
            return self._decode(out)
        array = self.array
        if array is None:
            raise ValueError(f"a {self.kind} message has no data")
        return array

    def _decode(self, out: np.ndarray | None) -> np.ndarray:
        shape, dtype = self.header["shape"], np.dtype(self.header["dtype"])
        try:
            return bitshuffle.decode(_buffer_of(self.payload), shape, dtype, out=out)
        except bitshuffle.ChunkError as e:
            reason = f"{self.encoding} payload of frame {self.frame_id}: {e}"
            raise ProtocolError(reason, kind="corrupt_payload") from None

    @property
    def nbytes(self) -> int:
        """Decoded size of the data (shape × itemsize), known without decoding."""
        if self.outputs:  # a result: its declared outputs
            return sum(math.prod(o.shape) * np.dtype(o.dtype).itemsize for o in self.outputs)
        if "shape" not in self.header:  # a failed result: no data
            return 0
        return math.prod(self.header["shape"]) * np.dtype(self.header["dtype"]).itemsize

    @property
    def wire_bytes(self) -> int:
        """Size of the payload(s) as they travelled."""
        if self.payloads:
            return sum(_buffer_of(p).nbytes for p in self.payloads)
        return 0 if self.payload is None else _buffer_of(self.payload).nbytes


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


def encode_data(header: dict[str, Any], array: np.ndarray, *, encoding: str = "none") -> list[Any]:
    """Frames of a data message: the header and the array buffer itself (no copy), or with
    ``encoding="bitshuffle-lz4"`` its compressed chunk (header fields ``encoding`` and
    ``encoded_bytes`` added; ``shape`` and ``dtype`` stay the decoded array's).

    The array must be C-contiguous and of an allowed dtype; checked here, before
    anything is sent, so a sender's bug never reaches a receiver.
    """
    if array.dtype.name not in WIRE_DTYPES:
        raise ValueError(f"dtype {array.dtype.name} is not allowed on the wire")
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous to be sent without a copy")
    if list(array.shape) != header["shape"] or array.dtype.name != header["dtype"]:
        raise ValueError("header does not describe the array")
    if encoding == "none":
        return [_dumps(header), memoryview(array).cast("B")]  # type: ignore[arg-type]
    if encoding != bitshuffle.NAME:
        raise ValueError(f"unknown encoding {encoding!r}")
    return encode_chunk(header, bitshuffle.encode(array))


def encode_chunk(header: dict[str, Any], chunk: Any) -> list[Any]:
    """Frames of a data message whose payload is an already made bitshuffle-LZ4 chunk (a
    replayed file's, read with ``read_direct_chunk``): checked against the header's shape
    and dtype first, so a sender's bug never reaches a receiver (ValueError)."""
    view = memoryview(chunk).cast("B")
    try:
        bitshuffle.check(view, header["shape"], np.dtype(header["dtype"]))
    except bitshuffle.ChunkError as e:
        raise ValueError(f"chunk does not hold {header['dtype']}{header['shape']}: {e}") from None
    return [_dumps({**header, "encoding": bitshuffle.NAME, "encoded_bytes": view.nbytes}), view]


def result_header(
    outputs: Sequence[Output], *, frame_id: int, seq: int, t_acq_ns: int, failed: str | None = None, **fields: Any
) -> dict[str, Any]:
    """The header of a result with ``outputs`` (none, and ``failed``, for a failed frame)."""
    header = {
        "v": VERSION,
        "kind": "result",
        "frame_id": int(frame_id),
        "seq": int(seq),
        "t_acq_ns": int(t_acq_ns),
        "outputs": [o.to_wire() for o in outputs],
        **fields,
    }
    if failed is not None:
        if outputs:
            raise ValueError("a failed result carries no output")
        header["failed"] = failed[:MAX_FAILED_TEXT]
    return header


def encode_result(header: dict[str, Any], arrays: Sequence[np.ndarray]) -> list[Any]:
    """Frames of a result: the header and one buffer per output (no copies); each array
    must match its declared output (checked here: a sender's bug never reaches the sink)."""
    declared = header["outputs"]
    if len(declared) != len(arrays):
        raise ValueError(f"{len(arrays)} arrays for {len(declared)} declared outputs")
    if not declared and not isinstance(header.get("failed"), str):
        raise ValueError("a result without outputs must say why it failed")
    parts: list[Any] = [_dumps(header)]
    for out, array in zip(declared, arrays, strict=True):
        if array.dtype.name != out["dtype"] or list(array.shape) != out["shape"]:
            raise ValueError(f"output {out['name']!r} does not match its declaration")
        if not array.flags.c_contiguous:
            raise ValueError("array must be C-contiguous to be sent without a copy")
        parts.append(memoryview(array.reshape(-1) if array.ndim == 0 else array).cast("B"))  # type: ignore[arg-type]
    return parts


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


#: a JSON string, escapes included (unrolled loop: linear, no backtracking); '"' and '\\'
#: never occur inside a UTF-8 multi-byte sequence, so this works on the raw bytes
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
#: bytes.translate arguments that keep only the brackets, both kinds made one
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(raw: bytes) -> bool:
    """True if arrays and objects nest deeper than MAX_HEADER_DEPTH (or do not balance).

    A header with at most MAX_HEADER_DEPTH brackets cannot be too deep: two C-speed
    counts, and a frame's header (one object, one shape) ends here. Otherwise strings are
    cut out (a '[' inside one is text), everything but brackets dropped, and each pass
    removes every innermost ``[]`` pair, which lowers the nesting by exactly one: what is
    left after MAX_HEADER_DEPTH passes is too deep. Every step is a C-speed scan.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_HEADER_DEPTH:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(MAX_HEADER_DEPTH):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


class _NonStandardNumber(ValueError):
    """NaN, Infinity or an overflowing float in a header: Python reads them, JSON has none."""


def _no_constant(name: str) -> Any:
    raise _NonStandardNumber(name)


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e999: an infinity by another name
        raise _NonStandardNumber(literal)
    return value


#: one decoder, made once (json.loads with hooks would build one per call)
_HEADER_JSON = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def _parse_header(raw: memoryview) -> Any:
    """The header frame as JSON, bounded: UTF-8 only, nesting at most MAX_HEADER_DEPTH,
    no NaN or infinities. Every failure is a ProtocolError, never a RecursionError."""
    data = raw.tobytes()
    if _too_deep(data):
        raise ProtocolError(f"header nests deeper than {MAX_HEADER_DEPTH} levels", kind="bad_header")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("header is not UTF-8", kind="garbage") from None
    try:
        return _HEADER_JSON.decode(text)
    except _NonStandardNumber as e:
        raise ProtocolError(f"header holds {e}, which is not a JSON number", kind="bad_header") from None
    except RecursionError:  # cannot happen within MAX_HEADER_DEPTH; never let it escape
        raise ProtocolError("header nests too deep", kind="bad_header") from None
    except ValueError:
        raise ProtocolError("header is not JSON", kind="garbage") from None


def decode(parts: Sequence[Any], *, max_payload_bytes: int, topic: bool = False) -> Message:
    """Validate and decode a received multipart message (frames or bytes).

    ``topic=True`` expects (and strips) a leading topic frame. Raises ProtocolError.
    """
    if topic:
        if len(parts) < 2:
            raise ProtocolError("missing topic or header", kind="bad_framing")
        parts = parts[1:]
    if not 1 <= len(parts) <= 1 + MAX_OUTPUTS:
        raise ProtocolError(f"expected 1 to {1 + MAX_OUTPUTS} frames, got {len(parts)}", kind="bad_framing")
    raw = _buffer_of(parts[0])
    if raw.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {raw.nbytes} bytes is too large", kind="oversized")
    header = _parse_header(raw)
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object", kind="garbage")
    if header.get("v") != VERSION or type(header.get("v")) is not int:  # not 1.0, not true
        raise ProtocolError(f"protocol version {header.get('v')!r}, expected {VERSION}", kind="bad_version")
    kind = header.get("kind")
    if isinstance(kind, str) and kind in CONTROL_KINDS:
        if len(parts) != 1:
            raise ProtocolError(f"{kind} message must not carry a payload", kind="bad_framing")
        return Message(kind=kind, header=header, control=_control(kind, header))
    if kind == SLOT_KIND:
        return _decode_slot(header, parts, max_payload_bytes)
    if kind not in DATA_KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}", kind="bad_kind")
    for field, typ in _DATA_FIELDS.items():
        _check_field(header, field, typ)
    if kind == "result":
        return _decode_result(header, parts, max_payload_bytes)
    if len(parts) != 2:
        raise ProtocolError(f"{kind} message must be a header and one payload", kind="bad_framing")
    dtype, shape = _frame_layout(header)
    encoding = header.get("encoding")
    if encoding is not None and encoding != "none":
        if math.prod(shape) * dtype.itemsize > max_payload_bytes:  # the decoded size: no bombs
            raise ProtocolError(
                f"decoded payload of {math.prod(shape) * dtype.itemsize} bytes exceeds the limit of "
                f"{max_payload_bytes}",
                kind="oversized",
            )
        return _encoded(kind, header, parts[1], _buffer_of(parts[1]), dtype, max_payload_bytes)
    array, payload = _array(parts[1], dtype, shape, max_payload_bytes)
    return Message(kind=kind, header=header, _array=array, payload=payload)


def _frame_layout(header: dict[str, Any]) -> tuple[np.dtype[Any], list[int]]:
    """A frame header's dtype (from the allow-list) and shape (sane), checked."""
    for field, typ in _FRAME_FIELDS.items():
        _check_field(header, field, typ)
    dtype_name = header["dtype"]
    if dtype_name not in WIRE_DTYPES:
        raise ProtocolError(f"dtype {dtype_name!r} is not allowed", kind="bad_dtype")
    shape = header["shape"]
    if not 1 <= len(shape) <= MAX_NDIM or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_DIM for n in shape
    ):
        raise ProtocolError(f"absurd shape {shape!r}", kind="bad_shape")
    return np.dtype(dtype_name), shape


def _decode_slot(header: dict[str, Any], parts: Sequence[Any], max_payload_bytes: int) -> Message:
    """A ring descriptor: a frame's header naming a ring (a name that stays in /dev/shm),
    a slot and a generation ≥ 1, and no payload. Whether the ring, slot and generation
    exist is the receiver's check, when it reads the slot (wire/ring.py)."""
    if len(parts) != 1:
        raise ProtocolError("a slot descriptor carries no payload", kind="bad_framing")
    for field, typ in _DATA_FIELDS.items():
        _check_field(header, field, typ)
    outputs: list[Output] = []
    if "outputs" in header:  # a result in a worker's ring: its outputs, one after the other
        outputs = _declared_outputs(header, max_payload_bytes)
        if not outputs or "failed" in header:
            raise ProtocolError("a result in a ring has outputs and no 'failed'", kind="bad_field")
    else:
        dtype, shape = _frame_layout(header)
        if math.prod(shape) * dtype.itemsize > max_payload_bytes:
            raise ProtocolError("slot frame exceeds the size limit", kind="oversized")
        encoding = header.get("encoding")
        if encoding is not None:  # the slot holds the publisher's chunk, not the pixels
            if encoding not in ENCODINGS[1:]:
                raise ProtocolError(f"unknown encoding {encoding!r}", kind="bad_encoding")
            _check_field(header, "encoded_bytes", int)
            if not 0 < header["encoded_bytes"] <= max_payload_bytes:
                raise ProtocolError("encoded_bytes out of range", kind="bad_field")
    for field in ("slot", "gen"):
        _check_field(header, field, int)
    ring = header.get("ring")
    if not isinstance(ring, str) or not RING_NAME.match(ring):
        raise ProtocolError(f"bad ring name {ring!r}", kind="bad_slot")
    if header["gen"] < 1:
        raise ProtocolError("slot generation must be ≥ 1", kind="bad_slot")
    readers = header.get("readers")
    if readers is not None and (
        not isinstance(readers, list)
        or len(readers) > 64
        or not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < 64 for r in readers)
    ):
        raise ProtocolError("'readers' must be a list of rows 0…63", kind="bad_slot")
    where = (ring, header["slot"], header["gen"])
    if outputs:
        return Message(kind="result", header=header, outputs=outputs, ring_slot=where)
    return Message(kind="frame", header=header, ring_slot=where, encoding=header.get("encoding"))


def encode_slot(
    header: dict[str, Any], ring: str, slot: int, gen: int, readers: Iterable[int] | None = None
) -> list[bytes]:
    """A frame's (or result's) descriptor: its header (kind ``slot``) naming where its data is."""
    # v and kind first, whatever the header's order: subscribers filter on that prefix (kind_topic)
    fields = {k: v for k, v in header.items() if k not in ("v", "kind", "readers")}
    where: dict[str, Any] = {"ring": ring, "slot": slot, "gen": gen}
    if readers is not None:
        where["readers"] = sorted(readers)
    return [_dumps({"v": VERSION, "kind": SLOT_KIND, **fields, **where})]


def _check_field(header: dict[str, Any], field: str, typ: type | tuple[type, ...]) -> None:
    value = header.get(field)
    if value is None:
        raise ProtocolError(f"missing field {field!r}", kind="missing_field")
    if not isinstance(value, typ) or isinstance(value, bool):
        raise ProtocolError(f"field {field!r} has the wrong type", kind="bad_field")
    # ids, sequence numbers and timestamps end up in int64 columns and in id ranges
    if isinstance(value, int) and not 0 <= value < 1 << 63:
        raise ProtocolError(f"field {field!r} is out of range", kind="bad_field")


def _array(payload: Any, dtype: np.dtype[Any], shape: list[int], max_payload_bytes: int) -> tuple[np.ndarray, Any]:
    """The payload as a read-only array of ``shape``: its length must be shape × itemsize."""
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_payload_bytes:
        raise ProtocolError(f"payload of {expected} bytes exceeds the limit of {max_payload_bytes}", kind="oversized")
    buf = _buffer_of(payload)
    if buf.nbytes != expected:
        raise ProtocolError(
            f"payload is {buf.nbytes} bytes, shape {shape} × {dtype.itemsize} needs {expected}", kind="bad_length"
        )
    return np.frombuffer(buf, dtype=dtype).reshape(shape), payload


def _encoded(
    kind: str, header: dict[str, Any], payload: Any, buf: memoryview, dtype: np.dtype[Any], max_payload_bytes: int
) -> Message:
    """An encoded data message, checked before anything is decompressed: a known encoding,
    ``encoded_bytes`` equal to the payload's length, the chunk's declared decoded size equal
    to shape × itemsize (already bounded by the size limit: no decompression bombs) and its
    blocks ending where the payload does. Decoding happens later (Message.array)."""
    encoding = header["encoding"]
    if encoding not in ENCODINGS[1:]:
        raise ProtocolError(f"unknown encoding {encoding!r}", kind="bad_encoding")
    declared = header.get("encoded_bytes")
    if not isinstance(declared, int) or isinstance(declared, bool):
        raise ProtocolError("field 'encoded_bytes' missing or of the wrong type", kind="bad_field")
    if buf.nbytes > max_payload_bytes:
        raise ProtocolError(f"payload of {buf.nbytes} bytes exceeds the limit of {max_payload_bytes}", kind="oversized")
    if buf.nbytes != declared:
        raise ProtocolError(f"payload is {buf.nbytes} bytes, encoded_bytes says {declared}", kind="bad_length")
    try:
        bitshuffle.check(buf.cast("B") if buf.format != "B" else buf, header["shape"], dtype)
    except bitshuffle.ChunkError as e:
        raise ProtocolError(f"{encoding} payload: {e}", kind="bad_encoding") from None
    return Message(kind=kind, header=header, payload=payload, encoding=encoding)


def _declared_outputs(header: dict[str, Any], max_payload_bytes: int) -> list[Output]:
    """A result's declared outputs, each a valid :class:`Output` (dtype allowed), names
    unique, all of them together within the size limit."""
    declared = header.get("outputs")
    if not isinstance(declared, list):
        raise ProtocolError("missing field 'outputs'", kind="missing_field")
    if len(declared) > MAX_OUTPUTS:
        raise ProtocolError(f"{len(declared)} outputs, at most {MAX_OUTPUTS}", kind="oversized")
    outputs: list[Output] = []
    names: set[str] = set()
    total = 0
    for item in declared:
        try:
            out = Output.from_wire(item)
        except ValueError as e:
            reason = "bad_dtype" if "dtype" in str(e) else "bad_shape" if "shape" in str(e) else "bad_field"
            raise ProtocolError(f"result output: {e}", kind=reason) from None
        if out.name in names:
            raise ProtocolError(f"output {out.name!r} listed twice", kind="bad_field")
        names.add(out.name)
        total += out.nbytes
        if total > max_payload_bytes:
            raise ProtocolError(f"outputs of {total} bytes exceed the limit of {max_payload_bytes}", kind="oversized")
        outputs.append(out)
    return outputs


def _decode_result(header: dict[str, Any], parts: Sequence[Any], max_payload_bytes: int) -> Message:
    """A result: its declared outputs (:func:`_declared_outputs`), one payload per output of
    exactly its size."""
    outputs = _declared_outputs(header, max_payload_bytes)
    if len(parts) != 1 + len(outputs):
        got = len(parts) - 1
        raise ProtocolError(f"{len(outputs)} outputs need as many payloads, got {got}", kind="bad_framing")
    failed = header.get("failed")
    if not outputs:
        if not isinstance(failed, str) or len(failed) > MAX_FAILED_TEXT:
            raise ProtocolError("a result without outputs needs 'failed', a short text", kind="bad_field")
        return Message(kind="result", header=header)
    if failed is not None:
        raise ProtocolError("a result with outputs cannot be 'failed'", kind="bad_field")
    arrays = [
        _array(part, np.dtype(out.dtype), list(out.shape), max_payload_bytes)[0]
        for out, part in zip(outputs, parts[1:], strict=True)
    ]
    return Message(
        kind="result",
        header=header,
        _array=arrays[0],
        payload=parts[1],
        outputs=outputs,
        arrays=arrays,
        payloads=tuple(parts[1:]),
    )


def encode_forward(header: dict[str, Any], *payloads: Any) -> list[Any]:
    """Frames to re-send a received data message with an edited header; the payloads
    (received zmq.Frames or buffers, already validated) are passed on without a copy."""
    return [_dumps(header), *payloads]


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
    """Inverse of :func:`to_ranges`, validating what came from the network (at most ``limit`` ids).

    Every range is checked and the total counted before any is expanded, so a hostile
    ``[[0, 2**62]]`` costs nothing. Prefer :func:`ranges_from_wire`, which never expands.
    """
    if not isinstance(ranges, list):
        raise ProtocolError("ranges must be a list", kind="bad_field")
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
    ids: list[int] = []
    for lo, hi in ranges:
        ids.extend(range(lo, hi + 1))
    return ids


def ranges_from_wire(ranges: Any, *, max_ranges: int = MAX_RANGES) -> IdRanges:
    """Wire id ranges (``[[lo, hi], ...]``) as an :class:`IdRanges`, never expanded: memory
    grows with the number of ranges (at most ``max_ranges``), not with the ids' values.
    Overlapping or unsorted ranges are merged; anything else malformed is a ProtocolError."""
    if isinstance(ranges, list) and len(ranges) > max_ranges:
        raise ProtocolError(f"more than {max_ranges} id ranges", kind="oversized")
    try:
        return IdRanges.from_wire(ranges, max_ranges=max_ranges)
    except ValueError as e:
        raise ProtocolError(f"id ranges: {e}", kind="bad_field") from None
