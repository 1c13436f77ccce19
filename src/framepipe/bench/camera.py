"""How close the publisher gets to the camera: published frames/s next to pypylon's own grab rate.

:func:`measure_basler` runs, back to back on the same (emulated) camera and settings:

1. pypylon's raw grab loop (RetrieveResult → GetArray → Release, nothing else), in-process;
2. the real ``framepipe publisher`` as a subprocess, with one subscriber in this process
   that receives every frame over tcp on loopback (the lossless policy: a frame counts as
   published only once the subscriber's queue took it);
3. the raw grab loop again,

and reports the publisher's rate over the mean of the two raw runs (bracketing the publisher
run, so a load change on a shared machine shows up as a spread between the raw runs).
The bench can call it; from a shell::

    python -m framepipe.bench.camera --frames 300 --width 1024 --height 1024 --pixel-format Mono8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from framepipe.bench.processes import write_config
from framepipe.cameras.basler import load_pylon, lock_emulator
from framepipe.config import Config
from framepipe.core.counters import steady_rate
from framepipe.runtime.component import Component
from framepipe.runtime.processes import Child, child_env, framepipe_argv
from framepipe.testing.ports import free_ports
from framepipe.wire.sockets import POLL_MS
from framepipe.wire.subscription import Subscription


def raw_grab_rate(
    frames: int,
    width: int,
    height: int,
    pixel_format: str = "Mono8",
    emulated: int = 1,
    exposure_us: float | None = None,
) -> tuple[float, int]:
    """Frames/s of pypylon's own grab loop on the first camera (frame-rate cap off), and how
    many RetrieveResult calls raised (retried, as the camera source does)."""
    pylon, genicam = load_pylon(emulated)
    cam = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateFirstDevice())
    info = cam.GetDeviceInfo()
    lock = lock_emulator(info.GetSerialNumber()) if info.GetDeviceClass() == "BaslerCamEmu" else None
    cam.Open()
    try:
        cam.PixelFormat.Value = pixel_format
        cam.OffsetX.Value = 0
        cam.OffsetY.Value = 0
        cam.Width.Value = width
        cam.Height.Value = height
        cam.AcquisitionFrameRateEnable.Value = False
        if exposure_us is not None:
            # the *Abs node is the one a GigE camera (and the emulator) acts on
            node = cam.ExposureTimeAbs if genicam.IsAvailable(cam.ExposureTimeAbs) else cam.ExposureTime
            node.Value = exposure_us
        cam.MaxNumBuffer.Value = 16
        cam.StartGrabbing(pylon.GrabStrategy_OneByOne)
        t0 = 0.0
        k = errors = 0
        while k <= frames:
            try:
                res = cam.RetrieveResult(5000, pylon.TimeoutHandling_ThrowException)
            except genicam.TimeoutException:
                raise
            except genicam.GenericException:
                errors += 1  # rare with the emulator flat out on a loaded machine
                if errors > 100:
                    raise
                continue
            try:
                res.GetArray()
            finally:
                res.Release()
            if k == 0:
                t0 = time.perf_counter()  # from the first frame, as the publisher's rate is
            k += 1
        return frames / (time.perf_counter() - t0), errors
    finally:
        if cam.IsGrabbing():
            cam.StopGrabbing()
        cam.Close()
        cam.DestroyDevice()
        if lock is not None:
            os.close(lock)


class _Counter(Component):
    """A subscriber that only counts what arrives (so the publisher, not a writer, is measured)."""

    role = "bench-counter"

    def run(self) -> int:
        pub = self.config.publisher
        sub = Subscription(
            self,
            stream="frames",
            pub_url=pub.connect_url(pub.frames_port),
            sync_url=pub.connect_url(pub.sync_port),
            hwm=pub.hwm_frames,
        )
        sub.hello(pub.sync_timeout_s)
        ids: list[int] = []
        while not self.stopping and sub.eos is None:
            if not sub.sub.poll(POLL_MS):
                continue
            while (msg := sub.receive()) is not None:
                if msg.kind == "eos":
                    break
                if msg.control is not None:
                    continue  # the acquisition's start
                if not ids:
                    self.counters["first_ns"] = time.time_ns()
                ids.append(msg.frame_id)
                self.counters["last_ns"] = time.time_ns()
        self.counters["received"] = len(ids)
        self.counters["in_order"] = int(ids == sorted(set(ids)))
        sub.bye(5.0, received=len(ids))
        return 0


def publisher_rate(
    frames: int,
    width: int,
    height: int,
    pixel_format: str = "Mono8",
    emulated: int = 1,
    exposure_us: float | None = None,
    subscriber: bool = True,
) -> dict[str, Any]:
    """Run the real publisher on the emulated camera with one counting subscriber.

    ``subscriber=False`` runs it with none (XPUB discards every frame): the camera side of
    the publisher alone, to tell it apart from the transport when the ratio is low.
    """
    frames_port, sync_port, preview_port = free_ports(3)
    settings = {
        "camera": {
            "kind": "basler",
            "emulated": emulated,
            "count": frames,
            "width": width,
            "height": height,
            "pixel_format": pixel_format,
            "fps": 0.0,
            "grab_strategy": "one_by_one",
            **({"exposure_us": exposure_us} if exposure_us is not None else {}),
        },
        "publisher": {
            "frames_port": frames_port,
            "sync_port": sync_port,
            "preview_port": preview_port,
            "subscribers": ["bench-counter"] if subscriber else [],
        },
    }
    config = Config.model_validate(settings)
    with tempfile.TemporaryDirectory(prefix="framepipe-measure-") as tmp:
        cfg_path = write_config(Path(tmp, "measure.toml"), settings)
        summary_path = Path(tmp, "publisher.json")
        argv = framepipe_argv("publisher", "--config", str(cfg_path), "--summary-json", str(summary_path))
        proc = Child("publisher", [*argv, "--log-level", "warning"], env=child_env(), cwd=tmp)
        counter = _Counter(config, name="bench-counter")
        try:
            with counter:
                if subscriber:
                    counter.run()
                code = proc.wait(timeout=300)
        finally:
            proc.kill()
        pub = json.loads(summary_path.read_text())
    return {
        "exit_code": code,
        "published": pub.get("published", 0),
        "published_fps": steady_rate(pub.get("published", 0), pub.get("first_ns"), pub.get("last_ns")) or 0.0,
        "blocked_ms": pub.get("blocked_ms", 0),
        "camera_lost": pub.get("camera_lost", 0),
        "subscriber": subscriber,
        "received": counter.counters["received"],
        "received_fps": steady_rate(*(counter.counters[k] for k in ("received", "first_ns", "last_ns"))) or 0.0,
        "in_order": bool(counter.counters["in_order"]),
    }


def measure_basler(
    frames: int = 300,
    width: int = 1024,
    height: int = 1024,
    pixel_format: str = "Mono8",
    emulated: int = 1,
    exposure_us: float | None = None,
    subscriber: bool = True,
) -> dict[str, Any]:
    """Raw grab rate, publisher rate, raw grab rate again; ``ratio`` = published / mean raw.

    ``exposure_us`` unset keeps the camera's own (the emulator's 10 ms caps it near 90 frames/s).
    """
    raw_before, errors_before = raw_grab_rate(frames, width, height, pixel_format, emulated, exposure_us)
    pub = publisher_rate(frames, width, height, pixel_format, emulated, exposure_us, subscriber)
    raw_after, errors_after = raw_grab_rate(frames, width, height, pixel_format, emulated, exposure_us)
    raw = (raw_before + raw_after) / 2
    return {
        "frames": frames,
        "size": f"{width}x{height}",
        "pixel_format": pixel_format,
        "exposure_us": exposure_us,
        "raw_grab_fps_before": round(raw_before, 1),
        "raw_grab_fps_after": round(raw_after, 1),
        "raw_retrieve_errors": errors_before + errors_after,
        **{k: round(v, 1) if isinstance(v, float) else v for k, v in pub.items()},
        "ratio": round(pub["published_fps"] / raw, 3) if raw else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--pixel-format", default="Mono8")
    p.add_argument("--exposure-us", type=float, default=None, help="default: the camera's own")
    p.add_argument("--no-subscriber", action="store_true", help="publish to nobody: the camera side alone")
    p.add_argument("--rounds", type=int, default=1, help="repeat the measurement")
    args = p.parse_args(argv)
    for _ in range(args.rounds):
        print(
            json.dumps(
                measure_basler(
                    args.frames,
                    args.width,
                    args.height,
                    args.pixel_format,
                    exposure_us=args.exposure_us,
                    subscriber=not args.no_subscriber,
                )
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
