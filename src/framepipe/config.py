"""The deployment configuration: one TOML file describes a whole deployment.

Layers, later ones win: the TOML file → environment variables ``FRAMEPIPE_SECTION__KEY``
(docker-compose friendly) → ``--set section.key=value`` flags. Every model forbids unknown
keys; every error is one :class:`~framepipe.errors.ConfigError` naming the file and key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from framepipe.errors import ConfigError

Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_host(value: str) -> str:
    """An IP address or a resolvable-looking hostname; ``*`` means every interface."""
    if value == "*":
        return value
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    labels = value.split(".")
    if (
        not value
        or len(value) > 253
        or not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() and not label.startswith("-")
            for label in labels
        )
    ):
        raise ValueError(f"not an IP address or host name: {value!r}")
    return value


class Endpoint(Section):
    """Where a stable component runs: others connect to ``host``, it binds on ``bind``."""

    host: str = "127.0.0.1"
    """Address other components use to reach this one."""
    bind: str | None = None
    """Interface to bind on; defaults to ``host``. ``*`` binds every interface."""

    @field_validator("host", "bind")
    @classmethod
    def _valid_host(cls, value: str | None) -> str | None:
        return None if value is None else _check_host(value)

    def bind_url(self, port: int) -> str:
        return f"tcp://{self.bind or self.host}:{port}"

    def connect_url(self, port: int) -> str:
        host = self.host
        if host == "*":
            host = "127.0.0.1"
        return f"tcp://{host}:{port}"


class CameraConfig(Section):
    """The frame source used by the publisher (and the ventilator when it reads a camera)."""

    kind: Literal["synthetic", "basler", "opencv", "replay"] = "synthetic"
    """Which source: synthetic (no hardware), basler (pypylon), opencv, replay (HDF5 file)."""
    width: int = Field(512, gt=0, le=16384)
    """Frame width in pixels (synthetic; ROI width for cameras that support it)."""
    height: int = Field(512, gt=0, le=16384)
    """Frame height in pixels (synthetic; ROI height for cameras that support it)."""
    dtype: Literal["uint8", "uint16"] = "uint16"
    """Pixel type of the synthetic source."""
    fps: float = Field(0.0, ge=0)
    """Frame rate; 0 means as fast as the source can go."""
    count: int = Field(300, ge=0)
    """Frames in a finite run; 0 means run until stopped."""
    seed: int = 0
    """Seed of the synthetic pattern: the same seed gives the same frames."""
    reel_frames: int = Field(32, ge=0)
    """Synthetic: distinct frames rendered once at start and played in a loop, so a frame costs
    no CPU (fewer if they would take over 32 MiB; none for frames over 16 MiB); 0 renders every
    frame (all distinct, ~0.3 ms of CPU per 1024² frame)."""
    grab_timeout_s: float = Field(5.0, gt=0)
    """How long one grab may block before the camera is declared lost."""

    # -- basler (pypylon); see docs/cameras.md
    serial: str | None = None
    """Basler: serial number of the camera to open (default: by user_name, else the first found)."""
    user_name: str | None = None
    """Basler: user-defined name (DeviceUserID) of the camera to open."""
    exposure_us: float | None = Field(None, gt=0)
    """Basler: exposure time in µs; unset leaves the camera's own setting."""
    gain: float | None = Field(None, ge=0)
    """Basler: analog gain in dB; unset leaves the camera's own setting."""
    pixel_format: Literal["Mono8", "Mono10", "Mono12", "Mono16"] = "Mono8"
    """Basler: pixel format; Mono8 gives uint8 frames, Mono10/12/16 give uint16."""
    offset_x: int = Field(0, ge=0)
    """Basler: ROI offset from the left edge, pixels (ROI size is width × height)."""
    offset_y: int = Field(0, ge=0)
    """Basler: ROI offset from the top edge, pixels."""
    grab_strategy: Literal["one_by_one", "latest"] = "one_by_one"
    """Basler: one_by_one for recording (no frame skipped in the driver while buffers last);
    latest for preview (always the newest image, skipped ones counted as lost)."""
    buffers: int = Field(16, ge=1, le=1024)
    """Basler: driver buffers (one frame each); the margin one_by_one has before the camera drops."""
    emulated: int = Field(0, ge=0, le=64)
    """Basler: offer this many pylon emulated cameras (sets PYLON_CAMEMU); 0 leaves it to the environment."""

    # -- opencv (cv2.VideoCapture): exactly one of device / path / url; replay: path
    device: int | None = Field(None, ge=0)
    """OpenCV: webcam index (0 = /dev/video0)."""
    path: str | None = None
    """OpenCV: a video file to play; replay: an HDF5 file recorded by framepipe."""
    url: str | None = None
    """OpenCV: a stream URL (rtsp://, http://...)."""
    colour: Literal["gray", "rgb"] = "gray"
    """OpenCV: gray publishes luminance (H, W) uint8; rgb publishes (H, W, 3) uint8 in RGB order."""

    # -- replay
    replay_pace: Literal["fps", "original"] = "fps"
    """Replay: fps publishes at camera.fps (0 = as fast as possible); original at the recorded pace."""
    replay_loop: bool = False
    """Replay: start again at the end of the file (frame ids keep increasing); stop with count or Ctrl-C."""

    @model_validator(mode="after")
    def _source_given(self) -> CameraConfig:
        if self.kind == "opencv":
            given = [k for k in ("device", "path", "url") if getattr(self, k) is not None]
            if len(given) != 1:
                raise ValueError(
                    f"kind = 'opencv' needs exactly one of device, path, url (got {', '.join(given) or 'none'})"
                )
        if self.kind == "replay" and not self.path:
            raise ValueError("kind = 'replay' needs path (an HDF5 file recorded by framepipe)")
        return self


class PublisherConfig(Endpoint):
    """The camera publisher: PUB stream of frames, ROUTER for start/end synchronisation."""

    frames_port: Port = 5550
    """PUB port of the frames stream."""
    sync_port: Port = 5551
    """REQ/REP synchronisation port (subscribers say hello before the first frame)."""
    preview_port: Port = 5553
    """PUB port of the frames preview: the same frames for passive watchers (the viewer),
    dropped for a watcher that falls behind, never waited for, whatever the policy."""
    subscribers: list[str] = Field(default_factory=lambda: ["ventilator", "recorder-frames"])
    """Names of the subscribers to wait for before the first frame."""
    sync_timeout_s: float = Field(30.0, gt=0)
    """How long to wait for the subscribers before giving up with an error."""
    policy: Literal["drop", "lossless"] = "lossless"
    """drop: never block the camera, slow subscribers lose frames (counted);
    lossless: a slow subscriber slows the publisher."""
    hwm_frames: int = Field(32, gt=0)
    """Send high-water mark, in frames, per subscriber."""
    status_port: Port | None = None
    """Status endpoint (JSON status and stop, for ``framepipe status``); none if unset."""


class VentilatorConfig(Endpoint):
    """The ventilator: fans frames out to the worker pool with exactly-once delivery."""

    tasks_port: Port = 5560
    """PUSH port the workers connect to."""
    source: Literal["publisher", "camera"] = "publisher"
    """Where frames come from: the publisher's stream, or the camera directly."""
    window: int = Field(16, gt=0, le=4096)
    """Frames in flight (sent, not yet acknowledged by the sink); bounds memory."""
    redispatch_after_s: float = Field(2.0, gt=0)
    """A frame not acknowledged within this time is sent again."""
    hwm_frames: int = Field(4, gt=0)
    """Send high-water mark per worker, in frames."""
    sync_timeout_s: float = Field(30.0, gt=0)
    """How long to wait for the sink and a first worker."""
    status_port: Port | None = None
    """Status endpoint (JSON status and stop, for ``framepipe status``); none if unset."""


class WorkersConfig(Section):
    """The FFT worker pool."""

    count: int = Field(2, gt=0, le=256)
    """Worker processes started by ``framepipe run`` or ``framepipe worker``."""
    result: Literal["power", "magnitude", "log_power", "complex"] = "power"
    """What a worker sends back: |F|² (float32), |F|, log1p(|F|²), or the complex64 half-spectrum."""
    heartbeat_s: float = Field(1.0, gt=0)
    """Interval between heartbeats to the sink."""
    hwm_frames: int = Field(2, gt=0)
    """Receive high-water mark, in frames."""


class SinkConfig(Endpoint):
    """The sink: gathers results, accounts for every frame, republishes results."""

    results_in_port: Port = 5570
    """PULL port the workers push results to."""
    results_port: Port = 5571
    """PUB port of the results stream."""
    control_port: Port = 5572
    """PUB port of control messages (acks to the ventilator, stop to the workers)."""
    sync_port: Port = 5573
    """REQ/REP synchronisation port (ventilator and results subscribers)."""
    preview_port: Port = 5575
    """PUB port of the results preview for passive watchers (the viewer); never waited for."""
    subscribers: list[str] = Field(default_factory=lambda: ["recorder-results"])
    """Names of the results subscribers to wait for before the first result."""
    sync_timeout_s: float = Field(30.0, gt=0)
    """How long to wait for the subscribers."""
    worker_timeout_s: float = Field(3.0, gt=0)
    """A worker silent this long is reported as lost."""
    hwm_frames: int = Field(32, gt=0)
    """Send high-water mark of the results stream, in results."""
    status_port: Port | None = None
    """Status endpoint (JSON status and stop; it also reports the workers); none if unset."""


class RecorderConfig(Endpoint):
    """One HDF5 recorder: a subscriber writing one stream to files (``host``: where it runs)."""

    name: str = "recorder"
    """Name used in synchronisation and logs; must be listed in its publisher's subscribers."""
    stream: Literal["frames", "results"] = "frames"
    """Which stream: raw frames from the publisher or FFT results from the sink."""
    path: str = "{data_dir}/{run}_{stream}.h5"
    """File path template: {data_dir}, {run}, {stream}, {name}, {run_id} (recorder start,
    UTC, e.g. 20260102T030405Z) and {index} (file number in a rotated series, from 0; format
    specs allowed, e.g. {index:04d}). An existing file is never overwritten."""
    hwm_frames: int = Field(64, gt=0)
    """Receive high-water mark, in frames."""
    status_port: Port | None = None
    """Status endpoint on ``host`` (JSON status and stop); none if unset."""
    compression: Literal["none", "bitshuffle-lz4", "blosc-lz4", "gzip"] = "bitshuffle-lz4"
    """Chunk compression (HDF5 filters from hdf5plugin; readers need ``import hdf5plugin``)."""
    compression_level: int = Field(4, ge=1, le=9)
    """Level for gzip and blosc-lz4 (bitshuffle-lz4 has none)."""
    direct_chunks: bool = True
    """Compress each frame in the recorder and write it with H5Dwrite_chunk; false goes
    through HDF5's filter pipeline (same file, more work in HDF5)."""
    compress_threads: int = Field(2, ge=0, le=16)
    """Threads compressing chunks while the recorder receives and writes (direct chunks only);
    0 compresses in the loop. Up to twice this many received frames are held in memory."""
    swmr: bool = True
    """Single-writer/multiple-reader: readers may open the file with swmr=True while it is written."""
    flush_frames: int = Field(50, ge=0)
    """Flush (make durable and visible to SWMR readers) every this many frames; 0 = no count limit."""
    flush_s: float = Field(0.5, ge=0)
    """Flush at least this often while frames arrive, in seconds; 0 = no time limit."""
    rotate_frames: int = Field(0, ge=0)
    """Start a new file after this many frames; 0 = never (path must contain {index} otherwise)."""
    rotate_bytes: int = Field(0, ge=0)
    """Start a new file once this many stored (compressed) frame bytes are in it; 0 = never."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError("use letters, digits, '-' and '_'")
        return value

    @model_validator(mode="after")
    def _rotation_needs_index(self) -> RecorderConfig:
        if (self.rotate_frames or self.rotate_bytes) and "{index" not in self.path:
            raise ValueError("path: rotation needs {index} in the path template, e.g. {data_dir}/{run}_{index:04d}.h5")
        try:
            self.path.format(data_dir="d", run="r", stream="s", name="n", run_id="i", index=0)
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(f"path: bad template {self.path!r}: {e!r}") from None
        return self


class ViewerConfig(Section):
    """The live view: a passive subscriber serving the latest frame and its spectrum to a browser."""

    name: str = "viewer"
    """Name in logs and status; the viewer is never in a publisher's subscribers list."""
    host: str = "127.0.0.1"
    """Interface the web page is served on; loopback by default, ``*`` for every interface."""
    port: Port = 5590
    """TCP port of the web page (http://host:port/)."""
    streams: list[Literal["frames", "results"]] = Field(["frames", "results"], min_length=1)
    """Streams to watch: frames (the publisher) and/or results (the sink). Without results,
    the viewer computes the spectrum of the frame it shows itself."""
    max_updates_per_s: float = Field(10.0, gt=0, le=60)
    """Page updates per second at most; between updates, the newest frame wins."""
    max_side: int = Field(1024, ge=64, le=8192)
    """Larger frames are shown subsampled to at most this many pixels per side."""
    hwm_frames: int = Field(8, gt=0)
    """Receive high-water mark per stream, in frames (the viewer drains it continuously).
    The viewer reads the publisher's and sink's preview ports, which drop frames for a
    viewer that falls behind instead of waiting for it."""

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return _check_host(value)


class LimitsConfig(Section):
    """Guards on what a process accepts from the network."""

    max_message_mb: float = Field(256.0, gt=0)
    """Largest payload accepted, in MB; larger messages are rejected."""


class SecurityConfig(Section):
    """CURVE encryption and authentication of every socket; off unless a key is set.

    Relative paths are relative to the directory the component is started in.
    """

    key_dir: str | None = None
    """Directory made by ``framepipe keys generate``; setting it turns CURVE on for every socket.
    The keys below default to files in it."""
    server_secret_key: str | None = None
    """Secret certificate of the binding side, needed where something binds (default {key_dir}/server.key_secret)."""
    server_public_key: str | None = None
    """Public certificate of the servers, needed by every client (default {key_dir}/server.key)."""
    client_secret_key: str | None = None
    """This machine's client certificate, for connecting sockets (default {key_dir}/client.key_secret)."""
    allowed_clients_dir: str | None = None
    """Directory of client public keys (``*.key``) servers accept (default {key_dir}/allowed_clients)."""

    @property
    def enabled(self) -> bool:
        return any((self.key_dir, self.server_secret_key, self.server_public_key, self.client_secret_key))


class RunConfig(Section):
    """The run as a whole."""

    name: str = "run"
    """Run name, used in file names."""
    id: str = ""
    """Run id, ``{run_id}`` in recorders' file names. Empty: each recorder uses its own start
    time; ``framepipe run`` sets one id, its start time (UTC), for every component."""
    data_dir: str = "data"
    """Directory for HDF5 files (created if missing)."""
    finish_timeout_s: float = Field(60.0, gt=0)
    """After end of stream, how long components wait for stragglers before giving up."""


class Config(Section):
    """A whole deployment."""

    run: RunConfig = Field(default_factory=RunConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    publisher: PublisherConfig = Field(default_factory=PublisherConfig)
    ventilator: VentilatorConfig = Field(default_factory=VentilatorConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    recorders: list[RecorderConfig] = Field(
        default_factory=lambda: [
            RecorderConfig(name="recorder-frames", stream="frames"),
            RecorderConfig(name="recorder-results", stream="results"),
        ]
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    viewer: ViewerConfig = Field(default_factory=ViewerConfig)

    @model_validator(mode="after")
    def _ports_unique(self) -> Config:
        seen: dict[tuple[str, int], str] = {}
        for section, key, port in self.bound_ports():
            host = getattr(self, section).bind or getattr(self, section).host
            for other_host in (host, "*"):
                clash = seen.get((other_host, port))
                if clash:
                    raise ValueError(f"{section}.{key}: port {port} is also used by {clash}")
            seen[(host, port)] = f"{section}.{key}"
            if host == "*":
                for (h, p), name in seen.items():
                    if p == port and h != "*":
                        raise ValueError(f"{section}.{key}: port {port} is also used by {name}")
        names = [r.name for r in self.recorders]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"recorders: name {sorted(dupes)[0]!r} is used twice")
        return self

    def bound_ports(self) -> Iterable[tuple[str, str, int]]:
        """(section, key, port) of every port a stable component binds."""
        for section in ("publisher", "ventilator", "sink"):
            model = getattr(self, section)
            for key in type(model).model_fields:
                if key.endswith("_port") and getattr(model, key) is not None:
                    yield section, key, getattr(model, key)

    def recorder(self, name: str) -> RecorderConfig:
        for rec in self.recorders:
            if rec.name == name:
                return rec
        known = ", ".join(r.name for r in self.recorders) or "none"
        raise ConfigError(f"no recorder named {name!r} (configured: {known})", key="recorders")


# ---------------------------------------------------------------------------- writing


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def dump_toml(sections: Mapping[str, Any]) -> str:
    """A deployment file's text (what :func:`load_config` reads) from ``{section: {key: value}}``,
    ``{name: [{...}, ...]}`` for arrays of tables (``[[recorders]]``) and top-level keys."""

    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(i, dict) for i in v)

    # TOML: top-level keys first, then tables, then arrays of tables
    lines = [f"{k} = {_toml_value(v)}" for k, v in sections.items() if not isinstance(v, dict) and not is_tables(v)]
    for name, items in sections.items():
        if isinstance(items, dict):
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in items.items()]
    for name, tables in sections.items():
        if is_tables(tables):
            for items in tables:
                lines.append(f"\n[[{name}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in items.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- loading


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise ConfigError(f"no list element {part!r}", source=source, key=".".join(parts[: i + 1])) from None
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError("is not a section", source=source, key=".".join(parts[: i + 1]))
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ConfigError(f"no list element {last!r}", source=source, key=dotted) from None
    else:
        node[last] = value


def _parse_value(text: str) -> Any:
    """A flag or env value: TOML/JSON syntax when it parses (numbers, lists, booleans), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def _key_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _expand_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    # A recorders list in the file replaces the default list; overrides of recorders.N
    # need the default list present to address it.
    if "recorders" not in tree:
        tree["recorders"] = [r.model_dump() for r in Config().recorders]
    return tree


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load a deployment: file, then ``FRAMEPIPE_*`` environment variables, then overrides.

    Raises ConfigError naming the file (or ``--set`` / the variable) and the key.
    """
    source = str(path) if path is not None else "<defaults>"
    tree: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                tree = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("file not found", source=source) from None
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", source=source) from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}", source=source) from e
    tree = _expand_defaults(tree)
    origin: dict[str, str] = {}

    env = os.environ if environ is None else environ
    for name in sorted(env):
        if not name.startswith("FRAMEPIPE_") or "__" not in name:
            continue
        dotted = name[len("FRAMEPIPE_") :].lower().replace("__", ".")
        _set_dotted(tree, dotted, _parse_value(env[name]), name)
        origin[dotted] = f"environment {name}"

    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}", source="--set")
        dotted, _, text = item.partition("=")
        dotted = dotted.strip()
        _set_dotted(tree, dotted, _parse_value(text.strip()), "--set")
        origin[dotted] = "--set"

    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        key = _key_of(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            # model-level checks put the key in the message
            if not key and ": " in msg:
                key, _, msg = msg.partition(": ")
        where = origin.get(key, source)
        raise ConfigError(msg, source=where, key=key or None) from None


def check_port_free(url: str) -> None:
    """Fail early, with the address, when a port to bind is already taken."""
    host, _, port = url.removeprefix("tcp://").rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("" if host == "*" else host, int(port)))
        except OSError as e:
            raise ConfigError(f"cannot bind {url}: {e.strerror}") from None


def default_config_path() -> Path | None:
    """configs/local.toml in the current directory or the checkout; None means the
    embedded defaults (which configs/local.toml mirrors)."""
    here = Path(__file__).resolve()
    for candidate in (Path.cwd() / "configs" / "local.toml", here.parents[2] / "configs" / "local.toml"):
        if candidate.is_file():
            return candidate
    return None


def run_id_now() -> str:
    """A run id from the current time (UTC), e.g. 20260102T030405Z: sortable, unique per second."""
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
