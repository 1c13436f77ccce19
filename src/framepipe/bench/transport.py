"""Transport: publisher → subscriber through framepipe, next to raw pyzmq zero-copy PUSH/PULL.

Both sides send the same pre-generated frame buffers (cycled), between two processes
over tcp on loopback, so the difference is framepipe's own cost per message: the JSON
header, validation, sequence numbers, the lossless XPUB's blocking send, the
subscriber's checks. The framepipe side is the real :class:`~framepipe.publisher.Publisher`
and :class:`~framepipe.subscription.Subscription`; only the camera is replaced by one
that hands out ready buffers (as the synthetic camera's reel does now; this predates it).

This module also holds the bench's stream subscriber (used by the latency measurement)
and the helper processes' entry point: ``python -m framepipe.bench.transport ROLE``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from framepipe.bench.processes import BenchError, Fleet, local_ports, write_config
from framepipe.cameras import Camera, synthetic_frame
from framepipe.config import Config, load_config
from framepipe.core import bitshuffle
from framepipe.core.frame import Frame, chunk_frame
from framepipe.runtime.component import Component
from framepipe.testing.ports import free_ports
from framepipe.wire.sockets import POLL_MS
from framepipe.wire.subscription import Subscription

#: distinct buffers cycled by both senders
DISTINCT_FRAMES = 4
#: latency samples kept by a subscriber (bounded)
MAX_SAMPLES = 100_000


class CyclingCamera(Camera):
    """``count`` frames from a few pre-generated buffers: a camera that costs nothing."""

    def __init__(self, height: int, width: int, dtype: str, count: int):
        self.count = count
        self.frames = [synthetic_frame(k, height, width, dtype, reel_frames=0) for k in range(DISTINCT_FRAMES)]
        for f in self.frames:
            f.setflags(write=False)  # shared by messages in flight: never written
        self._next = 0
        self._chunks: list[Any] = []

    def open(self) -> None:
        self._next = 0
        # a publisher that compresses gets the chunks made once here, as a camera that
        # holds compressed frames would give them: the publisher's own cost of compressing
        # is measured apart (bench.wire)
        self._chunks = [bitshuffle.encode(f) for f in self.frames] if self.chunks_wanted else []

    def grab(self, timeout_s: float) -> Frame | None:
        k = self._next
        if k >= self.count:
            return None
        self._next = k + 1
        array = self.frames[k % DISTINCT_FRAMES]
        if self._chunks:
            chunk = self._chunks[k % DISTINCT_FRAMES]
            return chunk_frame(k, chunk, array.shape, array.dtype, time.time_ns(), {})
        return Frame(frame_id=k, array=array, t_acq_ns=time.time_ns())

    def close(self) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        return {"source": "bench cycling buffers"}


class StreamSubscriber(Component):
    """Receives one broadcast stream to its end: counts, rate and (for results) latency."""

    role = "subscriber"

    def __init__(self, config: Config, name: str, stream: str):
        super().__init__(config, name)
        self.stream_name = stream
        self.latency_ms: list[float] = []
        #: where that latency went, per frame (ms): before the worker started on it
        #: (publisher, ventilator, queues, two hops), in the worker, after it (one hop, sink)
        self.stages_ms: dict[str, list[float]] = {"to_worker": [], "worker": [], "to_sink": []}
        self._transport = "tcp"

    def run(self) -> int:
        pub, sink = self.config.publisher, self.config.sink
        if self.stream_name == "frames":
            urls = pub.connect_url(pub.frames_port), pub.connect_url(pub.sync_port)
        else:
            urls = sink.connect_url(sink.results_port), sink.connect_url(sink.sync_port)
        sub = Subscription(
            self,
            stream=self.stream_name,
            pub_url=urls[0],
            sync_url=urls[1],
            hwm=64,
            shared_memory=self.config.transport.shared_memory,
        )
        self.ready(f"subscribing to {self.stream_name}")
        sub.hello(30.0)
        while not self.stopping:
            if not sub.sub.poll(POLL_MS):
                continue
            msg = sub.receive()
            if msg is None:
                continue
            if msg.kind == "eos":
                break
            if msg.control is not None:
                continue  # an acquisition's start
            now = time.time_ns()
            self.counters["received"] += 1
            self.counters["first_ns"] = self.counters["first_ns"] or now
            self.counters["last_ns"] = now
            self.counters["bytes"] += msg.nbytes if msg.payload is not None or msg.ring_slot else 0  # never decodes
            sub.release(msg)  # a frame read from the ring: its slot goes back
            t_sink = msg.header.get("t_sink_ns")
            if isinstance(t_sink, int) and len(self.latency_ms) < MAX_SAMPLES:
                h = msg.header
                self.latency_ms.append((t_sink - h["t_acq_ns"]) / 1e6)
                if isinstance(h.get("t_start_ns"), int) and isinstance(h.get("t_done_ns"), int):
                    self.stages_ms["to_worker"].append((h["t_start_ns"] - h["t_acq_ns"]) / 1e6)
                    self.stages_ms["worker"].append((h["t_done_ns"] - h["t_start_ns"]) / 1e6)
                    self.stages_ms["to_sink"].append((t_sink - h["t_done_ns"]) / 1e6)
        self.counters["gaps"] = sub.sequence.gaps
        self._transport = sub.transport
        if sub.eos is not None:
            sub.bye(5.0, received=self.counters["received"], gaps=sub.sequence.gaps)
        return 0

    def summary(self) -> dict[str, Any]:
        return {
            **super().summary(),
            "transport": self._transport,
            "latency_ms_samples": [round(x, 3) for x in self.latency_ms],
            "stage_ms_samples": {k: [round(x, 3) for x in v] for k, v in self.stages_ms.items()},
        }


def _raw_push(url: str, count: int, size: int, dtype: str) -> int:
    frames = [synthetic_frame(k, size, size, dtype, reel_frames=0) for k in range(DISTINCT_FRAMES)]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 32)  # the publisher's default hwm_frames
    push.connect(url)
    for k in range(count):
        push.send(frames[k % DISTINCT_FRAMES].data, copy=False)  # the array's buffer, not a copy
    push.close(linger=-1)  # deliver everything before exiting
    ctx.term()
    return 0


def _raw_pull(url: str, count: int, summary: str) -> int:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 64)
    pull.bind(url)
    print(f"ready: bound {url}", file=sys.stderr, flush=True)
    first = last = nbytes = 0
    for n in range(count):
        if not pull.poll(60_000):
            print(f"raw pull: nothing for 60 s after {n} message(s)", file=sys.stderr)
            return 1
        frame = pull.recv(copy=False)
        last = time.time_ns()
        first = first or last
        nbytes += len(frame.buffer)
    Path(summary).write_text(json.dumps({"received": count, "first_ns": first, "last_ns": last, "bytes": nbytes}))
    pull.close(linger=0)
    ctx.term()
    return 0


def _result(summary: dict[str, Any], frame_bytes: int) -> dict[str, Any]:
    from framepipe.bench.pipeline import rate

    fps = rate(summary, "received")
    return {"received": summary.get("received", 0), "fps": round(fps, 1), "gb_per_s": round(fps * frame_bytes / 1e9, 3)}


def measure(out: Path, *, frames: int, size: int, dtype: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """framepipe publisher → subscriber and raw PUSH/PULL, same buffers, same count."""
    from framepipe.bench.pipeline import component_costs, total_cpu_ms

    frame_bytes = size * size * np.dtype(dtype).itemsize
    me = [sys.executable, "-m", "framepipe.bench.transport"]
    run_dir = out / "runs" / "transport"
    hops: dict[str, dict[str, Any]] = {}
    for key, shared in (("framepipe", False), ("framepipe_shm", True)):
        sections: dict[str, Any] = {
            "recorders": [],
            "run": {"name": f"transport-{'shm' if shared else 'tcp'}", "data_dir": str(run_dir / "data")},
            "camera": {"width": size, "height": size, "dtype": dtype, "count": frames},
            "transport": {"shared_memory": shared},
            **local_ports(),
        }
        sections["publisher"]["subscribers"] = ["bench-subscriber"]
        hop_dir = run_dir / ("shm" if shared else "tcp")
        with Fleet(hop_dir) as fleet:
            config = write_config(hop_dir / "deployment.toml", sections)
            sub = fleet.start("subscriber", [*me, "subscribe", "--config", str(config), "--name", "bench-subscriber"])
            pub = fleet.start("publisher", [*me, "publish", "--config", str(config)])
            fleet.wait(timeout_s=timeout_s)
            fleet.check()
            hop = _result(sub.summary(), frame_bytes)
            hop["gaps"] = sub.summary().get("gaps")
            hop["transport"] = sub.summary().get("transport", "tcp")
            hop["components"] = component_costs({"publisher": pub, "subscriber": sub}, sub.summary())
            hop["cpu_ms_per_frame"] = total_cpu_ms(hop["components"])
        if hop["received"] != frames or hop["gaps"]:
            raise BenchError(f"transport: subscriber got {hop['received']} of {frames}, gaps {hop['gaps']}")
        hops[key] = hop
    framepipe = hops["framepipe"]

    url = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    with Fleet(run_dir / "raw") as fleet:
        pull = fleet.start(
            "raw-pull", [*me, "raw-pull", url, str(frames), str(run_dir / "raw-pull.json")], summary=False
        )
        pull.wait_for("ready:", timeout=60.0)
        fleet.start("raw-push", [*me, "raw-push", url, str(frames), str(size), dtype], summary=False)
        fleet.wait(timeout_s=timeout_s)
        fleet.check()
        raw_summary = json.loads((run_dir / "raw-pull.json").read_text())
        raw = _result(raw_summary, frame_bytes)
        raw["components"] = component_costs({c.name: c for c in fleet.children}, raw_summary)
        raw["cpu_ms_per_frame"] = total_cpu_ms(raw["components"])
    return {
        "frames": frames,
        "frame_bytes": frame_bytes,
        "framepipe": framepipe,
        # the same hop through the publisher's ring (a descriptor on the socket)
        "framepipe_shm": hops["framepipe_shm"],
        "raw_pyzmq": raw,
        "ratio": round(framepipe["fps"] / raw["fps"], 3) if raw["fps"] else None,
    }


def _component_main(component: Component, summary: str | None) -> int:
    component.install_signal_handlers()
    try:
        with component:
            return component.run()
    finally:
        component.write_summary(summary)


def main(argv: list[str] | None = None) -> int:
    from framepipe.core.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m framepipe.bench.transport", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("publish", "subscribe"):
        p = sub.add_parser(role)
        p.add_argument("--config", required=True)
        p.add_argument("--summary-json")
        p.add_argument("--name", default="bench-subscriber")
        p.add_argument("--stream", default="frames", choices=["frames", "results"])
    p = sub.add_parser("raw-push")
    p.add_argument("url")
    p.add_argument("count", type=int)
    p.add_argument("size", type=int)
    p.add_argument("dtype")
    p = sub.add_parser("raw-pull")
    p.add_argument("url")
    p.add_argument("count", type=int)
    p.add_argument("summary")
    args = parser.parse_args(argv)
    setup_logging("info")
    if args.role == "raw-push":
        return _raw_push(args.url, args.count, args.size, args.dtype)
    if args.role == "raw-pull":
        return _raw_pull(args.url, args.count, args.summary)
    config = load_config(args.config)
    if args.role == "publish":
        from framepipe.publisher import Publisher

        cam = config.camera
        return _component_main(
            Publisher(config, camera=CyclingCamera(cam.height, cam.width, cam.dtype, cam.count)), args.summary_json
        )
    return _component_main(StreamSubscriber(config, args.name, args.stream), args.summary_json)


if __name__ == "__main__":
    sys.exit(main())
