"""The deployment's configuration models: one section per component, each key typed,
bounded and documented; unknown keys are errors (``extra="forbid"``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from framepipe.core.errors import ConfigError

Port = Annotated[int, Field(ge=1, le=65535)]


class Section(BaseModel):
    # coerce_numbers_to_str: `--set camera.serial=40012345` is a serial, not an error
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


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

    def for_acquisition(self, frames: int, overrides: dict[str, object] | None = None) -> CameraConfig:
        """This camera for one acquisition: ``frames`` (0 = until stopped) and the
        acquisition's overrides, validated like the config file.

        Raises ConfigError naming ``camera.KEY`` and what it allows, in one line.
        """
        overrides = dict(overrides or {})
        for key in overrides:
            if key not in ACQUISITION_SETTINGS:
                allowed = ", ".join(sorted(ACQUISITION_SETTINGS))
                raise ConfigError(f"not a per-acquisition setting (those are: {allowed})", key=f"camera.{key}")
        try:
            return type(self).model_validate({**self.model_dump(), **overrides, "count": frames})
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            key = ".".join(str(p) for p in err["loc"]) or "count"
            value = overrides.get(key, frames if key == "count" else None)
            raise ConfigError(f"{err['msg']} (got {value!r})", key=f"camera.{key}") from None


#: camera settings an acquisition may change (``framepipe acquire --set camera.KEY=VALUE``)
ACQUISITION_SETTINGS = frozenset(
    {"exposure_us", "gain", "fps", "width", "height", "offset_x", "offset_y", "pixel_format", "dtype"}
)


def _is_loopback(host: str) -> bool:
    """True for an address only this host reaches (``*`` binds every interface: not loopback)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or "*": other hosts may connect


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
    control_port: Port = 5554
    """ROUTER of the acquisition control endpoint: ``framepipe acquire``, ``stop``,
    ``snap``, ``shutdown`` and ``status`` ask the publisher here (it owns the camera)."""
    heartbeat_s: float = Field(1.0, gt=0)
    """While idle, a heartbeat on the frames stream this often: subscribers notice a dead
    publisher (``limits.upstream_timeout_s``) and a restarted one (they say hello again)."""
    wire_compression: Literal["none", "bitshuffle-lz4", "auto"] = "none"
    """How frames travel: ``none`` (raw pixels), ``bitshuffle-lz4`` (compressed once here,
    in HDF5's bitshuffle filter's chunk format: the frames recorder stores it as received),
    or ``auto``: compressed when the frames port is bound on an address other hosts can
    reach (not loopback). One PUB socket sends every subscriber the same bytes, so ``auto``
    decides per publisher, not per connection."""

    def wire_encoding(self) -> str:
        """The encoding frames go out with: ``none`` or ``bitshuffle-lz4`` (``auto`` resolved)."""
        if self.wire_compression != "auto":
            return self.wire_compression
        return "none" if _is_loopback(self.bind or self.host) else "bitshuffle-lz4"


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
    """The worker pool and what it computes (docs/processors.md)."""

    count: int = Field(2, gt=0, le=256)
    """Worker processes started by ``framepipe run`` or ``framepipe worker``."""
    processor: str | Annotated[list[str], Field(min_length=1, max_length=16)] = "fft"
    """The processor: a built-in name (fft, roi, flatfield, phase_shift), ``package.module:Class``,
    or an entry point of ``framepipe.processors``; a list is a chain, run in order."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The processor's parameters (a chain: one table per step, by its name), checked by its own model."""
    result: Literal["power", "magnitude", "log_power", "complex"] = "power"
    """The ``fft`` processor's default output: |F|² (float32), |F|, log1p(|F|²), or the complex64 half-spectrum."""
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
    path: str = "{data_dir}/{run}_{run_id}_{acquisition:04d}_{acquisition_name}_{stream}.h5"
    """File path template: {data_dir}, {run}, {stream}, {name}, {run_id} (run.id, else the
    recorder's start, UTC, e.g. 20260102T030405Z) and {index} (file number in a rotated series,
    from 0; format specs allowed, e.g. {index:04d}). An existing file is never overwritten, so
    without {run_id} a second run stops with "file exists"."""
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
            self.file_path(RunConfig(), run_id="i")
        except (KeyError, ValueError, IndexError) as e:
            raise ValueError(f"path: bad template {self.path!r}: {e!r}") from None
        return self

    def file_path(
        self,
        run: RunConfig,
        run_id: str,
        index: int = 0,
        *,
        run_name: str | None = None,
        acquisition: int = 1,
        acquisition_name: str | None = None,
    ) -> str:
        """The file this recorder writes for an acquisition of ``run`` (``index``: its number
        in a rotated series). ``run_name`` and ``run_id`` are the deployment's, as its
        publisher's start message says them."""
        return self.path.format(
            data_dir=run.data_dir,
            run=run_name or run.name,
            stream=self.stream,
            name=self.name,
            run_id=run_id,
            index=index,
            acquisition=acquisition,
            acquisition_name=acquisition_name or run.name,
        )


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


class WebConfig(Section):
    """Who may use the HTTP API and control panel that ``framepipe view`` (alias ``framepipe
    web``) serves on ``viewer.host:viewer.port``.

    On loopback (the default) nothing is asked. Beyond loopback a token is required: without
    ``token_file`` the server refuses to start. Every state change (start, stop) needs the
    token, always once a token is set; reads need it too unless ``open_reads``.
    """

    token_file: str | None = None
    """File holding the API token (one line, e.g. ``openssl rand -hex 32``). Clients send it as
    ``Authorization: Bearer TOKEN``; the page asks for it once and keeps it in the browser."""
    open_reads: bool = False
    """Beyond loopback, let anyone who can reach the port read (state, statuses, images,
    ``/metrics``) without the token; start and stop still need it."""
    answer_timeout_s: float = Field(2.0, gt=0, le=30)
    """How long a request waits for the deployment (control and status endpoints) before the
    answer says ``down``: the page and scripts never hang on a paused or gone pipeline."""


class LimitsConfig(Section):
    """Guards on what a process accepts from the network."""

    max_message_mb: float = Field(256.0, gt=0)
    """Largest payload accepted, in MB; larger messages are rejected."""
    upstream_timeout_s: float = Field(10.0, gt=0)
    """An acquisition whose stream is silent this long (no frame, no heartbeat: the
    publisher died) ends as ``upstream lost``, its files ``complete=false``; a standing
    component then waits for its upstream to come back, a one-acquisition run exits 1."""


class TransportConfig(Section):
    """How frames travel between components on the same host (docs/decisions/0003-shared-memory.md)."""

    shared_memory: bool = True
    """Same-host hops take frames from the publisher's shared-memory ring (only a small
    descriptor on the socket); chosen per connection at sync, TCP whenever in doubt and
    always across hosts. false: TCP everywhere."""
    ring_frames: int = Field(64, ge=4, le=4096)
    """Slots in the publisher's ring, each one frame: /dev/shm holds ring_frames × the
    frame size (64 × 2 MB for 1024² uint16). A full ring follows publisher.policy:
    lossless waits for the slowest same-host consumer, drop drops (counted)."""
    result_ring_frames: int = Field(16, ge=2, le=4096)
    """Slots in each worker's results ring (used when the sink is on the worker's host),
    each one result: /dev/shm holds result_ring_frames × the result size per worker
    (16 × 2 MB for a 1024² power spectrum). A result that finds the ring full for 0.5 s
    goes by TCP instead (counted)."""


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
    """This process's client certificate, for connecting sockets (default {key_dir}/<role>.key_secret:
    publisher, ventilator, sink, worker, recorder, viewer, or operator for the ops commands)."""
    allowed_clients_dir: str | None = None
    """Client public keys servers accept, by role: ``<role>/*.key`` (default {key_dir}/allowed_clients)."""
    operator_hosts: list[str] = Field(default_factory=list)
    """Without CURVE: hosts besides loopback whose acquire, stop and shutdown are obeyed
    (by source address; with CURVE only operator keys are)."""

    @field_validator("operator_hosts")
    @classmethod
    def _valid_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if host == "*":
                raise ValueError("'*' is not a host: list the operator machines")
            _check_host(host)
        return value

    @property
    def enabled(self) -> bool:
        return any((self.key_dir, self.server_secret_key, self.server_public_key, self.client_secret_key))


class RunConfig(Section):
    """The run as a whole."""

    name: str = "local"
    """Run name, used in file names (configs/local.toml's, as every default here)."""
    id: str = ""
    """Run id, ``{run_id}`` in recorders' file names. Empty: each recorder uses its own start
    time; ``framepipe run`` sets one id, its start time (UTC), for every component."""
    data_dir: str = "data"
    """Directory for HDF5 files (created if missing)."""
    finish_timeout_s: float = Field(60.0, gt=0)
    """After end of stream, how long components wait for stragglers before giving up."""
    serve: bool = False
    """A standing deployment: the publisher waits for ``framepipe acquire`` and the
    components stay up between acquisitions until ``framepipe shutdown``
    (``framepipe run --serve`` sets it). False: one acquisition from the config
    (``camera.count`` frames, named after the run), then every component exits."""
    history: int = Field(16, ge=1, le=64)
    """Finished acquisitions whose summaries the publisher keeps for ``framepipe status``."""
    host_label: str = ""
    """How this machine is named in status, worker names and files; empty: its hostname.
    Set it per machine (``FRAMEPIPE_RUN__HOST_LABEL``, or ``--set`` in its unit) where
    hostnames say nothing (containers, network namespaces)."""

    def host(self) -> str:
        """This machine's name in a deployment: ``host_label``, else the hostname."""
        import socket

        return self.host_label or socket.gethostname()


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
    transport: TransportConfig = Field(default_factory=TransportConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    viewer: ViewerConfig = Field(default_factory=ViewerConfig)
    web: WebConfig = Field(default_factory=WebConfig)

    def local_tasks_url(self) -> str:
        """The ventilator's tasks for workers on its own host: an abstract unix socket, so
        only processes in the ventilator's network namespace (its host) can connect."""
        run = re.sub(r"[^A-Za-z0-9_.]", "_", self.run.name)[:60]
        return f"ipc://@framepipe-{run}-tasks-{self.ventilator.tasks_port}"

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

    @model_validator(mode="after")
    def _recorder_paths_distinct(self) -> Config:
        """Two recorders writing one file: the second would stop with "file exists" mid-run."""
        seen: dict[str, int] = {}
        for i, rec in enumerate(self.recorders):
            # one run id for all, as under ``framepipe run``
            path = os.path.normpath(rec.file_path(self.run, run_id="RUN_ID"))
            if path in seen:
                other = self.recorders[seen[path]].name
                raise ValueError(
                    f"recorders.{i}.path: {rec.name} would write the same file as {other} "
                    f"({rec.path!r} gives {path!r}); add {{name}} or {{stream}} to one of them"
                )
            seen[path] = i
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
