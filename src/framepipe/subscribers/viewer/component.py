"""The live view: the latest frame and its power spectrum in a browser, updated live.

``framepipe view`` subscribes to the frames preview (publisher) and/or the results
preview (sink) and serves the control panel on ``viewer.host:viewer.port`` (loopback by
default): this module watches the streams and renders views, a
:class:`~framepipe.subscribers.viewer.views.Front` given by the process (the web server of
:mod:`framepipe.ops.web`) serves them, :mod:`~framepipe.subscribers.viewer.images` draws them.

Never slows the pipeline:

- It reads the *preview* ports (``publisher.preview_port``, ``sink.preview_port``): the
  same messages as the streams, on a socket of their own that drops what a watcher
  cannot take (a small high-water mark) and never waits, whatever the publisher's
  policy. A viewer that is slow, stopped with Ctrl-Z or gone never holds the stream up
  (while connected it costs the publisher's I/O thread a send of each frame, not a wait);
  a ``lossless`` stream's ``XPUB_NODROP`` would have waited for it.
- It is a *passive* late subscriber: it is in no publisher's ``subscribers`` list and
  never says hello, so no publisher waits for it at the start or at the end of a stream.
- Its loop only drains the SUB sockets (zero-copy receive, header validation), keeping
  references to the newest messages. Images are made at most ``max_updates_per_s``
  times a second and only while a browser is watching; in between, the newest frame
  wins (counted as ``decimated``, not as drops).
- Sequence gaps (frames the viewer did not get: it joined late, or fell behind and the
  preview dropped them) are counted per stream and shown.

The frame and the spectrum shown side by side belong to the same frame id: the viewer
keeps the last few frames (bounded by count and bytes) to pair with the newest result; when
it watches frames only, or the result's frame is gone, it computes the spectrum itself.
After an end of stream the viewer keeps the last image and waits for the next run. A new
acquisition's start drops the views of the last one: what the page shows (frame id, counts,
levels, saturation) always belongs to the frame on show, never to the previous run.

Each view carries what the page needs beyond the pictures: the counts black and white stand
for (the colour bar), the pixels at the camera's full scale (the saturation warning,
:mod:`~framepipe.subscribers.viewer.saturation`), and a reference to the frame itself, so
the pixel readout asks for one value at a time (:meth:`View.pixel`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from framepipe.config import Config
from framepipe.core.counters import Count
from framepipe.core.errors import ConfigError
from framepipe.core.ledger import SequenceTracker
from framepipe.runtime.component import Component
from framepipe.subscribers.viewer.images import (
    BGR_FORMATS,
    encode_png,
    frame_picture,
    frame_spectrum_picture,
    spectrum_picture,
)
from framepipe.subscribers.viewer.saturation import saturation
from framepipe.subscribers.viewer.views import Front, View
from framepipe.wire.messages import AcquisitionStart, EndOfStream
from framepipe.wire.protocol import Message
from framepipe.wire.sockets import POLL_MS
from framepipe.wire.subscription import Subscription

#: frames kept to pair with results that arrive later (count, and bytes whichever is smaller)
PAIR_FRAMES = 64
PAIR_BYTES = 256 * 1024 * 1024
#: without a page request for this long, nobody is watching: stop making images
WATCHED_S = 5.0
#: messages taken from one socket before looking at the others and the clock
DRAIN_BATCH = 512
#: rendered views kept, so a page gets the image pair it was told about
VIEWS_KEPT = 4


def _level(value: float, counts: bool = False) -> float | None:
    """A colour bar's end for JSON: whole counts for integer frames (a percentile falls between
    two), else 3 decimals (a log power, a float frame); None for NaN."""
    if not math.isfinite(value):
        return None
    return round(value) if counts else round(value, 3)


class StreamWatch:
    """One watched stream: its subscription, gap and rate accounting across runs."""

    def __init__(self, owner: Viewer, stream: str, pub_url: str, hwm: int):
        self.stream = stream
        self.pub_url = pub_url
        self.sub = Subscription(owner, stream=stream, pub_url=pub_url, sync_url="", hwm=hwm)
        self.received = 0
        self.gaps_before = 0  # gaps of the runs that ended
        self.joined_at_seq: int | None = None
        self.missed_before_joining = 0  # gaps that are only the viewer arriving mid-run
        self.runs_ended = 0
        self.data_since_eos = 0
        self.latest: Message | None = None
        #: the acquisition on the stream (its start message's id and name), shown on the page
        self.acquisition: dict[str, Any] | None = None
        self.rate_fps = 0.0
        self._rate_n = 0
        self._rate_t = time.monotonic()

    @property
    def gaps(self) -> int:
        return self.gaps_before + self.sub.sequence.gaps

    def end_of_run(self) -> None:
        """An end of stream: keep its gaps, get ready for the next run's sequence from 0."""
        if self.data_since_eos:
            self.runs_ended += 1
            self.gaps_before += self.sub.sequence.gaps
        # a repeated end-of-stream of a run already closed is not a new run: nothing counted
        self.sub.eos = None
        if self.acquisition is not None:
            self.acquisition["open"] = False
        self.sub.sequence = SequenceTracker()
        self.data_since_eos = 0
        self.joined_at_seq = None
        # the run is over: its rate goes with it, not up to a second later
        self.rate_fps = 0.0
        self._rate_n, self._rate_t = self.received, time.monotonic()

    @property
    def state(self) -> str:
        """waiting (nothing yet), started (an acquisition's start, no data yet), streaming, ended."""
        if self.data_since_eos:
            return "streaming"
        if self.acquisition is not None and self.sub.eos is None and self.acquisition.get("open"):
            return "started"
        return "ended" if self.runs_ended else "waiting"

    def update_rate(self, now: float) -> None:
        dt = now - self._rate_t
        if dt >= 1.0:
            self.rate_fps = (self.received - self._rate_n) / dt
            self._rate_n, self._rate_t = self.received, now

    def status(self) -> dict[str, Any]:
        return {
            "url": self.pub_url,
            "received": self.received,
            "frames_per_s": round(self.rate_fps, 1),
            "gaps": self.gaps,
            "joined_at_seq": self.joined_at_seq,
            # frames missed while watching, as opposed to before the viewer joined
            "dropped": max(0, self.gaps - self.missed_before_joining),
            "runs_ended": self.runs_ended,
            "state": self.state,
            "acquisition": self.acquisition,
        }


class Viewer(Component):
    """SUB frames/results (passive, decimated) → a live web page."""

    role = "viewer"

    def __init__(self, config: Config, name: str | None = None, front: Callable[[Viewer], Front] | None = None) -> None:
        """``front``: makes what serves the views (None: watch only, nothing served)."""
        super().__init__(config, name or config.viewer.name)
        self._make_front = front
        self.cfg = config.viewer
        self.watches: dict[str, StreamWatch] = {}
        self.recent_frames: collections.OrderedDict[int, Message] = collections.OrderedDict()
        self._recent_bytes = 0
        self.views: collections.OrderedDict[int, View] = collections.OrderedDict()
        self._views_changed = threading.Condition()
        self._view_id = 0
        self._shown_key: tuple[str, int] | None = None
        self._last_request = 0.0
        self._updates: collections.deque[float] = collections.deque(maxlen=64)
        self._server: Front | None = None
        #: the acquisition under way or last seen (its start: id, name, run_id), None before any
        self.acquisition: dict[str, Any] | None = None
        self._camera: dict[str, Any] = {}
        # what "decimated" counts: this acquisition's frames received, and views made of them
        self._acq_received = 0
        self._acq_views = 0

    # ---------------------------------------------------------------- lifecycle
    def run(self) -> int:
        cfg = self.cfg
        pub, sink = self.config.publisher, self.config.sink
        # the preview ports: a viewer that falls behind (or is stopped) loses frames there,
        # it never holds up the stream, not even a lossless one
        urls = {"frames": pub.connect_url(pub.preview_port), "results": sink.connect_url(sink.preview_port)}
        for stream in dict.fromkeys(cfg.streams):
            self.watches[stream] = StreamWatch(self, stream, urls[stream], cfg.hwm_frames)
        self._serve()
        self.ready("streams=" + ",".join(self.watches))
        period = 1.0 / cfg.max_updates_per_s
        next_render = 0.0
        poller = zmq.Poller()
        for watch in self.watches.values():
            poller.register(watch.sub.sub, zmq.POLLIN)
        while not self.stopping:
            events = dict(poller.poll(POLL_MS))
            for watch in self.watches.values():
                if events.get(watch.sub.sub):
                    self._drain(watch)
            now = time.monotonic()
            for watch in self.watches.values():
                watch.update_rate(now)
            if now >= next_render and self._watched(now):
                try:
                    made = self._render()
                except ValueError as e:  # valid on the wire, but not an image (e.g. 4 channels)
                    self.counters[Count.UNSHOWABLE] += 1
                    self.warn.warning("unshowable", "cannot show this frame: %s", e)
                    self._shown_key, made = self._pending_key(), True
                if made:
                    next_render = now + period
        self.log.info("stopping: %d view(s) served", self._view_id)
        return 0

    def close(self) -> None:
        server, self._server = self._server, None
        with self._views_changed:
            self._views_changed.notify_all()  # long polls see the server gone and answer
        if server is not None:
            server.close()
        super().close()

    def _serve(self) -> None:
        if self._make_front is None:
            return
        # kept before it starts: a long poll that arrives at once must see a server running
        self._server = server = self._make_front(self)
        try:
            server.start()
        except OSError as e:
            raise ConfigError(
                f"cannot serve the live view on {self.cfg.host}:{self.cfg.port}: {e.strerror}"
                " (another viewer running? choose another viewer.port)",
                key="viewer.port",
            ) from e
        shown_host = self.cfg.host if self.cfg.host != "*" else "0.0.0.0"
        self.bound.append(f"http=http://{shown_host}:{self.cfg.port}/")

    def _watched(self, now: float) -> bool:
        return not self.views or now - self._last_request < WATCHED_S

    # ---------------------------------------------------------------- receiving
    def _drain(self, watch: StreamWatch) -> None:
        sock = watch.sub.sub
        for _ in range(DRAIN_BATCH):
            events = sock.getsockopt(zmq.EVENTS)
            if not (isinstance(events, int) and events & zmq.POLLIN):
                return
            restarts = watch.sub.sequence.restarts
            msg = watch.sub.receive()
            if msg is None:
                continue  # malformed (counted by the subscription) or a straggler
            if msg.kind != "eos" and watch.sub.sequence.restarts > restarts and watch.data_since_eos:
                # the sequence went back: a new run, whose predecessor's end of stream the
                # preview dropped (it drops for a viewer that is behind, that message too)
                self.log.info("%s: a new run began (the last one's end of stream did not arrive)", watch.stream)
                watch.end_of_run()
                watch.sub.sequence.see(msg.seq)
            if isinstance(msg.control, AcquisitionStart):
                start = msg.control
                watch.acquisition = {"id": start.acquisition, "name": start.name, "open": True}
                self.log.info("%s: acquisition %d '%s'", watch.stream, start.acquisition, start.name)
                self._begin(start)
                continue
            if isinstance(msg.control, EndOfStream):
                if watch.data_since_eos:
                    self.log.info(
                        "%s: end of stream (%s) after %d message(s), %d gap(s)",
                        watch.stream,
                        msg.control.reason,
                        watch.data_since_eos,
                        watch.sub.sequence.gaps,
                    )
                watch.end_of_run()
                continue
            if watch.stream == "results" and ("representation" not in msg.header or msg.array is None):
                # a failed frame, or another processor's outputs: not a spectrum to show
                self.counters[Count.UNSHOWABLE] += 1
                continue
            if watch.data_since_eos == 0:
                watch.joined_at_seq = msg.seq
                watch.missed_before_joining += msg.seq
                self.log.info("%s: streaming (joined at seq %d)", watch.stream, msg.seq)
            watch.data_since_eos += 1
            watch.received += 1
            self.counters[f"received_{watch.stream}"] += 1
            watch.latest = msg
            if watch.stream == "frames" or "frames" not in self.watches:
                self._acq_received += 1
            if watch.stream == "frames" and "results" in self.watches:
                self._keep_for_pairing(msg)

    def _begin(self, start: AcquisitionStart) -> None:
        """A new acquisition (its start on the first stream that brings it): the last one's
        views, frames and counts go, so nothing on the page belongs to a frame not shown."""
        key = {"id": start.acquisition, "name": start.name, "run_id": start.run_id}
        if self.acquisition == key:
            return  # the same start on the other stream
        self.acquisition = key
        self._camera = dict(start.camera or {})
        self._acq_received = self._acq_views = 0
        self.recent_frames.clear()
        self._recent_bytes = 0
        for watch in self.watches.values():
            watch.latest = None
        self._shown_key = None
        with self._views_changed:
            self.views.clear()
            self._views_changed.notify_all()

    def _keep_for_pairing(self, msg: Message) -> None:
        assert msg.array is not None
        old = self.recent_frames.pop(msg.frame_id, None)
        if old is not None and old.array is not None:
            self._recent_bytes -= old.array.nbytes
        self.recent_frames[msg.frame_id] = msg
        self._recent_bytes += msg.array.nbytes
        while len(self.recent_frames) > 1 and (
            len(self.recent_frames) > PAIR_FRAMES or self._recent_bytes > PAIR_BYTES
        ):
            _, gone = self.recent_frames.popitem(last=False)
            if gone.array is not None:
                self._recent_bytes -= gone.array.nbytes

    # ---------------------------------------------------------------- rendering
    def _choose(self) -> tuple[Message | None, Message | None]:
        """The newest (frame, result) pair of one frame id; result None = compute it here."""
        frames, results = self.watches.get("frames"), self.watches.get("results")
        result = results.latest if results else None
        if result is not None:
            if frames is None:
                return None, result
            frame = self.recent_frames.get(result.frame_id)
            if frame is not None:
                return frame, result
        return (frames.latest if frames else None), None

    def _pending_key(self) -> tuple[str, int] | None:
        """The key of what :meth:`_render` would show now (so a bad one is not retried)."""
        frame, result = self._choose()
        shown = result if result is not None else frame
        return None if shown is None else ("result" if result is not None else "frame", shown.frame_id)

    def _render(self) -> bool:
        """Make a new view if there is something new to show; True if one was made."""
        frame, result = self._choose()
        shown = result if result is not None else frame
        if shown is None:
            return False
        key = ("result" if result is not None else "frame", shown.frame_id)
        if key == self._shown_key:
            return False
        max_side = self.cfg.max_side
        meta: dict[str, Any] = {"frame_id": shown.frame_id, "t_acq_ns": shown.header["t_acq_ns"]}
        acq = self.acquisition
        if acq is not None and shown.header.get("acquisition", acq["id"]) == acq["id"]:
            meta["acquisition"] = {"id": acq["id"], "name": acq["name"]}
        frame_png = spectrum_png = None
        pixel_format = None
        if frame is not None:
            assert frame.array is not None
            meta["shape"], meta["dtype"] = list(frame.array.shape), frame.array.dtype.name
            pixel_format = frame.header.get("pixel_format") or self._camera.get("pixel_format")
            pixel_format = pixel_format if isinstance(pixel_format, str) else None
            picture = frame_picture(frame.array, max_side=max_side, pixel_format=pixel_format)
            frame_png = encode_png(picture.image)
            meta["levels"] = [_level(v, counts=frame.array.dtype.kind in "ui") for v in picture.levels]
            saturated = saturation(frame.array, pixel_format)
            meta["saturation"] = dataclasses.asdict(saturated) if saturated is not None else None
        if result is not None:
            assert result.array is not None
            representation = str(result.header.get("representation", "power"))
            frame_shape = result.header.get("frame_shape")
            width = frame_shape[1] if isinstance(frame_shape, list) and len(frame_shape) >= 2 else None
            if not isinstance(width, int) or not 0 < width <= 2 * result.array.shape[1]:
                width = None
            img = spectrum_picture(result.array, representation=representation, width=width, max_side=max_side)
            meta["spectrum"] = f"worker {result.header.get('worker', '?')} ({representation})"
            meta.setdefault("shape", frame_shape)
            meta.setdefault("dtype", result.header.get("frame_dtype"))
        else:
            assert frame is not None and frame.array is not None
            img = frame_spectrum_picture(frame.array, max_side=max_side)
            meta["spectrum"] = "computed by the viewer"
        spectrum_png = encode_png(img.image)
        meta["spectrum_levels"] = [_level(v) for v in img.levels]
        self._shown_key = key
        self._view_id += 1
        self._acq_views += 1
        self.counters[Count.VIEWS] += 1
        self._updates.append(time.monotonic())
        view = View(
            self._view_id,
            frame_png,
            spectrum_png,
            meta,
            values=frame.array if frame is not None else None,
            bgr=bool(pixel_format and pixel_format.lower() in BGR_FORMATS),
        )
        with self._views_changed:
            self.views[self._view_id] = view
            while len(self.views) > VIEWS_KEPT:
                self.views.popitem(last=False)
            self._views_changed.notify_all()
        if self._view_id == 1:
            self.log.info("showing frame %d (first view)", shown.frame_id)
        return True

    # ---------------------------------------------------------------- what the page asks for
    def latest_view(self, view_id: int | None = None) -> View | None:
        """The view ``view_id`` if it is still kept, else the newest (None before the first)."""
        with self._views_changed:
            if view_id is not None and view_id in self.views:
                return self.views[view_id]
            return next(reversed(self.views.values()), None)

    def wait_for_view(self, after: int, timeout_s: float) -> None:
        """Block (an HTTP thread) until a view newer than ``after`` exists, or the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._views_changed:
            while not self.views or next(reversed(self.views)) <= after:
                now = time.monotonic()
                if now >= deadline or (self._server is None and self._make_front is not None):
                    return
                self._last_request = now  # someone is watching: keep making views
                self._views_changed.wait(min(1.0, deadline - now))

    def status(self) -> dict[str, Any]:
        """What the page shows next to the images (also ``/status.json``)."""
        self._last_request = time.monotonic()
        view = self.latest_view()
        updates = list(self._updates)
        recent = [t for t in updates if t > self._last_request - 2.0]
        states = [w.state for w in self.watches.values()]
        out: dict[str, Any] = {
            "viewer": self.name,
            # streaming, started (an acquisition began, no frame yet), ended, or "no run" yet
            "state": next((s for s in ("streaming", "started", "ended") if s in states), "no run"),
            "acquisition": self.acquisition and {"id": self.acquisition["id"], "name": self.acquisition["name"]},
            "view_id": view.view_id if view else None,
            **(view.meta if view else {}),
            "updates_per_s": round(len(recent) / 2.0, 1),
            "max_updates_per_s": self.cfg.max_updates_per_s,
            "shown": self.counters[Count.VIEWS],
            # this acquisition's frames not shown: the newest frame wins between updates
            "decimated": max(0, self._acq_received - self._acq_views),
            "rejected": self.counters[Count.REJECTED],
            "streams": {s: w.status() for s, w in self.watches.items()},
        }
        if view:
            out["age_ms"] = round((time.time_ns() - int(view.meta["t_acq_ns"])) / 1e6, 1)
        return out

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["streams"] = {s: w.status() for s, w in self.watches.items()}
        return out
