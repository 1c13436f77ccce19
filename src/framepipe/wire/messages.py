"""Control messages as types: one pydantic model per message, tagged by ``kind``.

A control message is one JSON object (see protocol.py for the framing). Each kind that
goes on the wire has a model here, requests and replies alike::

    ControlModel                      v = 1, kind
    ├── Request                       name, t_send_ns: to a sync ROUTER
    │   ├── Hello, Bye                subscriber/ventilator → publisher or sink
    │   ├── EndOfStreamRequest (eos)  ventilator → sink: the ids it accepted
    │   ├── Acquire                   operator → publisher's control endpoint
    │   └── Command                   operator → publisher: stop, snap, state, wait, shutdown
    ├── AcquisitionStart   (start)    on a broadcast stream: an acquisition begins
    ├── EndOfStream         (eos)     on a broadcast stream: the ids it carried
    ├── Ack, Stop, WorkersAlive       the sink's control stream (topics ack, stop, workers)
    ├── Heartbeat                     worker → sink results-in
    ├── StatusRequest       (status)  → a component's status endpoint
    └── Reply                         t_server_ns: every sync reply carries the server's clock
        ├── Welcome, Done             answers to hello, bye and the end-of-stream request
        ├── AcquisitionState (state)  the publisher's answer to acquire and commands
        ├── StatusReply     (status)  answer of a status endpoint
        └── ErrorReply      (error)   a refused request, and why (``reason``, one line)

Two kinds carry two shapes each, told apart by their fields (they predate the models and
stay as they are on the wire): ``eos`` with a ``name`` is the ventilator's request to the
sink, without one the end of a broadcast stream; ``status`` with ``alive`` is the sink's
worker list, with ``ok`` a status reply, otherwise a status request. :data:`CONTROL`
picks the model from the kind and those fields (a pydantic discriminated union); only
protocol.py decodes with it.

Policy, the same for every model:

- ``extra="forbid"``: a field no model declares is refused (``unknown_field``). Strictness
  over forward compatibility, deliberately: every process of a deployment runs the same
  framepipe, so an unknown field is a sender's bug or a peer of another protocol version,
  and a sync request refused with an :class:`ErrorReply` naming the field says which. A
  new field is a protocol change: declared here, in both ends at once (or ``v`` bumped).
- ``strict=True``: JSON types as sent — no ``"7"`` for 7, no ``true`` for 1, no 1.5.
- Bounded: ids, counts and timestamps are int64 and ≥ 0; names are non-empty and at most
  :data:`MAX_NAME` characters; lists and dicts have a length limit; id ranges are
  validated ``[first, last]`` pairs (what they stand for is bounded where they are expanded
  into ids, ``protocol.from_ranges``: a long run's end of stream is still received, and
  refused only by a reader that would expand it). Free text (reasons) is cut to :data:`MAX_TEXT`
  characters rather than refused: it is for people, and a long camera error must not stop
  the end of stream that reports it.
- Absent and ``null`` are the same: fields left at ``None`` are not sent.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

VERSION = 1

#: a worker, subscriber or stream name (the sink refused longer heartbeat names before)
MAX_NAME = 200
#: worker names in one list (the sink's ``alive``, its welcome's ``workers``)
MAX_NAMES = 1024
#: id ranges in one list: more than a 64 KiB header can hold with ids past 10,000, so the
#: header limit binds first; the models stay bounded on their own if it ever grows
MAX_RANGES = 8192
#: keys of a free-form dict (camera metadata, a component's status)
MAX_KEYS = 256
#: free text: reasons, errors
MAX_TEXT = 1000

_INT64 = 1 << 63


def _cut(value: Any) -> Any:
    return value[:MAX_TEXT] if isinstance(value, str) else value


def one_line(text: str) -> str:
    """Free text as one line of at most MAX_TEXT characters (an error reply's reason)."""
    return " ".join(text.split())[:MAX_TEXT]


def _one_line(value: Any) -> Any:
    return one_line(value) if isinstance(value, str) else value


def _range_pair(pair: list[int]) -> list[int]:
    if len(pair) != 2 or pair[0] > pair[1]:
        raise PydanticCustomError(
            "bad_range", "a range is [first, last] with first <= last, got {pair}", {"pair": pair}
        )
    return pair


#: a frame id, a count or a wall-clock time in ns: they end up in int64 columns
Count = Annotated[int, Field(ge=0, lt=_INT64)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Names = Annotated[list[Name], Field(max_length=MAX_NAMES)]
Text = Annotated[str, BeforeValidator(_cut)]
OneLine = Annotated[str, BeforeValidator(_one_line), Field(min_length=1)]
Metadata = Annotated[dict[str, Any], Field(max_length=MAX_KEYS)]
#: inclusive id ranges, the wire form of a set of frame ids: ``[[0, 99], [101, 250]]``
IdRangeList = Annotated[
    list[Annotated[list[Count], AfterValidator(_range_pair)]],
    Field(max_length=MAX_RANGES),
]


class ControlModel(BaseModel):
    """Base of every control message: the protocol version and the kind."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: which model of the union (see :func:`_shape`); the kind, unless a kind has two shapes
    TAG: ClassVar[str]

    v: Literal[1] = 1
    #: each model narrows it to its own literal (declared here so it is sent second, after v)
    kind: str


class Request(ControlModel):
    """Base of the requests to a sync server: who asks, and when by its clock."""

    name: Name
    #: the client's clock when it sent the request
    t_send_ns: Count | None = None


class Hello(Request):
    """A subscriber (or the ventilator) says it is there; answered by Welcome."""

    TAG = "hello"
    kind: Literal["hello"] = "hello"
    #: the ventilator to the sink: the acquisition about to be dispatched (an
    #: AcquisitionStart's fields) and the token its tasks carry
    acquisition: Metadata | None = None
    token: Name | None = None
    #: where the sender runs (wire.ring.host_identity): a subscriber on the publisher's
    #: host is offered its shared-memory ring
    host: Name | None = None


class Bye(Request):
    """A subscriber is done with the stream, with its counts; answered by Done."""

    TAG = "bye"
    kind: Literal["bye"] = "bye"
    received: Count | None = None
    gaps: Count | None = None
    written: Count | None = None
    missing: Count | None = None
    #: frames the processor failed on (accounted for, not missing; never complete)
    failed: Count | None = None
    complete: bool | None = None
    error: Text | None = None
    #: the acquisition these counts are for (standing deployments: one bye per acquisition)
    acquisition: Count | None = None
    expected: Count | None = None
    path: Text | None = None
    #: the sink's report to the publisher: its results subscribers' byes, by name
    subscribers: Metadata | None = None


class EndOfStreamRequest(Request):
    """The ventilator's end of work to the sink: the frame ids it accepted; answered by
    Done once the sink holds them all (or its finish timeout passed)."""

    TAG = "eos-request"
    kind: Literal["eos"] = "eos"
    frame_ids: IdRangeList
    #: sent and never acknowledged (the rest of frame_ids were, maybe by an earlier sink)
    unacknowledged: IdRangeList | None = None
    #: the acquisition (its AcquisitionStart's fields), for a sink that restarted since its start
    acquisition: Metadata | None = None
    #: what the publisher's end of stream said the camera produced: the reference
    #: ``complete`` is judged against (absent: the ventilator owns the camera, frame_ids is it)
    source_ids: IdRangeList | None = None
    reason: Text | None = None
    #: the deployment stays up after this acquisition (absent: it ends)
    stays_up: bool | None = None


class EndOfStream(ControlModel):
    """The end of a broadcast stream (frames or results), repeated until subscribers' byes."""

    TAG = "eos"
    kind: Literal["eos"] = "eos"
    stream: Name | None = None
    reason: Text | None = None
    #: the last sequence number sent; -1: nothing was
    seq_last: Annotated[int, Field(ge=-1, lt=_INT64)] | None = None
    count: Count | None = None
    #: the ids the stream should have carried, which subscribers compare with what they hold
    frame_ids: IdRangeList | None = None
    #: frames stream: frames the camera itself lost (gaps in its frame counter)
    camera_lost: Count | None = None
    #: the acquisition that ended (absent: a stream of one acquisition, from before them)
    acquisition: Count | None = None
    #: the deployment stays up for the next acquisition (absent: the stream is over, exit)
    stays_up: bool | None = None


class AcquisitionStart(ControlModel):
    """An acquisition begins on a broadcast stream (DECTRIS stream v2's start message):
    everything a file needs to say what it holds, before the first frame."""

    TAG = "start"
    kind: Literal["start"] = "start"
    acquisition: Count
    name: Name
    #: the deployment: its name and id (file names and attributes)
    run: Name
    run_id: Name
    #: frames asked for (0: until stopped)
    frames: Count
    #: the camera settings of this acquisition, as the publisher applied them
    settings: Metadata
    #: the camera's own metadata (model, serial, ...)
    camera: Metadata | None = None
    t_start_ns: Count | None = None
    #: the stream's sequence number of this message (its first frame's is the next)
    seq: Count | None = None


class Acquire(Request):
    """Start an acquisition: ``frames`` (0 = until stopped), a name, camera overrides."""

    TAG = "acquire"
    kind: Literal["acquire"] = "acquire"
    frames: Count
    acquisition_name: Name | None = None
    camera: Metadata | None = None


class Command(Request):
    """An operator's command to the publisher's control endpoint."""

    TAG = "command"
    kind: Literal["command"] = "command"
    action: Literal["stop", "snap", "state", "wait", "shutdown"]
    #: ``wait``: the acquisition to wait for (absent: the current or last one)
    acquisition: Count | None = None


class Ack(ControlModel):
    """Results the sink received (new or duplicate), topic ``ack``."""

    TAG = "ack"
    kind: Literal["ack"] = "ack"
    ids: IdRangeList


class Stop(ControlModel):
    """The sink tells workers to stop, topic ``stop``."""

    TAG = "stop"
    kind: Literal["stop"] = "stop"
    reason: Text | None = None


class WorkersAlive(ControlModel):
    """The workers the sink hears from, topic ``workers``."""

    TAG = "status-workers"
    kind: Literal["status"] = "status"
    alive: Names
    #: the sink's instance: the ventilator tells a restarted sink the acquisition under way
    instance: Name | None = None
    #: where the sink runs (wire.ring.host_identity): a worker there writes its results
    #: into shared memory
    host: Name | None = None


class Heartbeat(ControlModel):
    """A worker is alive (sent to the sink's results-in every ``heartbeat_s``)."""

    TAG = "heartbeat"
    kind: Literal["heartbeat"] = "heartbeat"
    name: Name
    processed: Count | None = None
    #: on a broadcast stream: the publisher's instance (a new one means it restarted)
    instance: Name | None = None


class StatusRequest(ControlModel):
    """To a component's status endpoint: its status, or a stop (as SIGTERM would)."""

    TAG = "status-request"
    kind: Literal["status"] = "status"
    cmd: Literal["status", "stop"] = "status"


class Reply(ControlModel):
    """Base of the replies to requests; a sync server stamps its clock on each."""

    t_server_ns: Count | None = None


class Welcome(Reply):
    """The answer to hello: the stream's metadata (frames: the camera's; sink to the
    ventilator: the workers it knows)."""

    TAG = "welcome"
    kind: Literal["welcome"] = "welcome"
    stream: Name | None = None
    seq: Count | None = None
    camera: Metadata | None = None
    workers: Names | None = None
    #: the acquisition under way (its AcquisitionStart's fields), for a late joiner
    acquisition: Metadata | None = None
    #: this instance of the publisher (see Heartbeat.instance)
    instance: Name | None = None
    #: to a subscriber on the publisher's host: its shared-memory ring (name), the ring's
    #: nonce (the probe: the subscriber reads it there) and the subscriber's row in it
    ring: Name | None = None
    ring_nonce: Name | None = None
    ring_row: Annotated[int, Field(ge=0, lt=64, strict=True)] | None = None


class Done(Reply):
    """The answer to bye, and the sink's to the end-of-stream request (with its counts)."""

    TAG = "done"
    kind: Literal["done"] = "done"
    received: Count | None = None
    missing: Count | None = None
    duplicates: Count | None = None
    acknowledged_elsewhere: Count | None = None
    #: frames the processor failed on (received as failures: not missing, not results)
    failed: Count | None = None


class AcquisitionState(Reply):
    """The publisher's answer to acquire and to commands: its state, the acquisition under
    way (or just accepted), and for ``wait`` the finished acquisition's summary."""

    TAG = "state"
    kind: Literal["state"] = "state"
    state: Literal["idle", "acquiring", "draining", "shutting down"]
    acquisition: Metadata | None = None
    summary: Metadata | None = None
    #: the last acquisitions' summaries, newest last
    history: Annotated[list[Metadata], Field(max_length=64)] | None = None


class StatusReply(Reply):
    """A status endpoint's answer: ``status`` (see runtime/status.py) or ``stopping``.
    A refusal is an :class:`ErrorReply`, never this with ``ok=False``."""

    TAG = "status-reply"
    kind: Literal["status"] = "status"
    ok: bool
    status: Metadata | None = None
    stopping: bool | None = None


class ErrorReply(Reply):
    """A refused request: ``reason`` says why, in one line.

    ``ok`` is always false, so a client that only checks ``ok`` sees a refusal too."""

    TAG = "error"
    kind: Literal["error"] = "error"
    ok: Literal[False] = False
    reason: OneLine


#: every control message, the type a decoded one has (``Message.control``)
Control = (
    Hello
    | Bye
    | EndOfStreamRequest
    | EndOfStream
    | AcquisitionStart
    | Acquire
    | Command
    | Ack
    | Stop
    | WorkersAlive
    | Heartbeat
    | StatusRequest
    | Welcome
    | Done
    | AcquisitionState
    | StatusReply
    | ErrorReply
)

MODELS: tuple[type[ControlModel], ...] = get_args(Control)
CONTROL_KINDS = frozenset(model.model_fields["kind"].default for model in MODELS)


def _shape(data: Any) -> str | None:
    """The model a header is for: its kind, or for ``eos`` and ``status`` its shape."""
    if not isinstance(data, dict):
        return getattr(data, "TAG", None)
    kind = data.get("kind")
    if kind == "eos":
        return EndOfStreamRequest.TAG if "name" in data else EndOfStream.TAG
    if kind == "status":
        if "alive" in data:
            return WorkersAlive.TAG
        return StatusReply.TAG if "ok" in data else StatusRequest.TAG
    return kind if isinstance(kind, str) else None


#: validates a decoded header into its model (protocol.decode is its only reader)
CONTROL: TypeAdapter[Control] = TypeAdapter(
    Annotated[Union[tuple(Annotated[model, Tag(model.TAG)] for model in MODELS)], Discriminator(_shape)]  # noqa: UP007
)


def first_error(error: ValidationError) -> tuple[str, str, str]:
    """(field, message, pydantic error type) of the first thing wrong with a header."""
    first = error.errors(include_url=False, include_context=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"][1:])  # [0] is the model's tag
    return field or "header", first["msg"], first["type"]


def control_message(kind: str, **fields: Any) -> Control:
    """Build the model of ``kind`` from its fields (the sender's side of :data:`CONTROL`).

    Raises ValueError, a sender's bug, for what a receiver would refuse.
    """
    if kind not in CONTROL_KINDS:
        raise ValueError(f"not a control kind: {kind}")
    try:
        return CONTROL.validate_python({"v": VERSION, "kind": kind, **fields})
    except ValidationError as e:
        field, problem, _ = first_error(e)
        raise ValueError(f"invalid {kind} message: {field}: {problem}") from None
