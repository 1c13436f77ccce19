"""The naive baseline: the classic pyzmq tutorial's way of doing the same job.

!!! BENCHMARK ONLY — NEVER PART OF THE PIPELINE !!!
This module deliberately uses ``send_pyobj`` / ``recv_pyobj`` (pickle on the wire: it
executes whatever it is sent) and ``numpy.fft.fft2`` on complex128, because that is the
floor framepipe is measured against. Nothing in framepipe imports it except the
benchmark. Its sockets are never on the network, not even loopback TCP (which every
local user can reach): they are Unix sockets (``ipc://``) in a directory of mode 0700
made for one measurement and removed after it, so only the benchmarking user's own
processes can send the pickle. The pickle stays in this file.

Shape of the tutorial: a ventilator PUSHes pickled frames, W workers PULL them, compute
``fft2`` and PUSH the pickled complex128 spectrum to a sink. Here ventilator and sink are
one driver process (so the pipeline is as short as the tutorial's can be); two liberties,
both in the baseline's favour or neutral: the driver keeps at most 2×W frames in flight
(the tutorial would queue them all: unbounded memory), and start-up waits for every
worker's hello and subscription instead of a sleep or "press Enter".
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

import numpy as np
import zmq

from framepipe.bench.processes import BenchError, Fleet
from framepipe.cameras import synthetic_frame


def _worker(tasks: str, results: str, control: str) -> int:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(tasks)
    push = ctx.socket(zmq.PUSH)
    push.connect(results)
    stop = ctx.socket(zmq.SUB)
    stop.setsockopt(zmq.SUBSCRIBE, b"")
    stop.connect(control)
    push.send_pyobj(("hello", os.getpid()))  # pickle: benchmark only
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    poller.register(stop, zmq.POLLIN)
    while True:
        events = dict(poller.poll(100))
        if stop in events:
            break
        if pull in events:
            frame_id, frame = pull.recv_pyobj()  # pickle: benchmark only
            spectrum = np.fft.fft2(frame.astype(np.complex128))
            push.send_pyobj((frame_id, spectrum))  # pickle: benchmark only
    for s in (pull, push, stop):
        s.close(linger=0)
    ctx.term()
    return 0


def _driver(urls: list[str], workers: int, frames: int, size: int, dtype: str, summary: str) -> int:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.bind(urls[0])
    pull = ctx.socket(zmq.PULL)
    pull.bind(urls[1])
    control = ctx.socket(zmq.XPUB)  # XPUB: we see the workers subscribe, no slow joiner
    control.setsockopt(zmq.XPUB_VERBOSE, 1)  # every worker's subscription, not only the first
    control.bind(urls[2])
    hellos = subscribed = 0
    deadline = time.monotonic() + 60
    while hellos < workers or subscribed < workers:
        if time.monotonic() > deadline:
            print(f"naive driver: {hellos} hello(s), {subscribed} subscription(s) of {workers}", file=sys.stderr)
            return 1
        if pull.poll(100):
            pull.recv_pyobj()  # pickle: benchmark only
            hellos += 1
        while control.poll(0):
            subscribed += control.recv()[:1] == b"\x01"
    print("ready: naive driver", file=sys.stderr, flush=True)
    sent = received = 0
    seen: set[int] = set()
    first = last = 0
    window = 2 * workers
    while received < frames:
        if sent < frames and sent - received < window:
            push.send_pyobj((sent, synthetic_frame(sent, size, size, dtype)))  # pickle: benchmark only
            sent += 1
            continue
        if not pull.poll(60_000):
            print(f"naive driver: no result for 60 s ({received} of {frames})", file=sys.stderr)
            return 1
        frame_id, _spectrum = pull.recv_pyobj()  # pickle: benchmark only
        last = time.time_ns()
        first = first or last
        seen.add(frame_id)
        received += 1
    control.send(b"stop")
    Path(summary).write_text(json.dumps({"received": len(seen), "first_ns": first, "last_ns": last}))
    for s in (push, pull, control):
        s.close(linger=1000)
    ctx.term()
    return 0


def measure(out: Path, *, workers: int, frames: int, size: int, dtype: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Frames/s of the tutorial-style pipeline with ``workers`` workers on the same frames."""
    from framepipe.bench.pipeline import component_costs, rate, total_cpu_ms

    run_dir = out / "runs" / f"naive-w{workers}"
    me = [sys.executable, "-m", "framepipe.bench.naive"]
    # pickle never on a network port: Unix sockets in a directory only this user can enter
    with tempfile.TemporaryDirectory(prefix="framepipe-naive-") as private, Fleet(run_dir) as fleet:
        assert os.stat(private).st_mode & 0o077 == 0, f"{private} is open to others"
        urls = [f"ipc://{private}/{name}" for name in ("tasks", "results", "control")]
        driver = fleet.start(
            "driver",
            [
                *me,
                "driver",
                *urls,
                str(workers),
                str(frames),
                str(size),
                dtype,
                str(run_dir / "driver.json"),
            ],
            summary=False,
        )
        procs = [fleet.start(f"worker-{i}", [*me, "worker", *urls], summary=False) for i in range(workers)]
        fleet.wait(timeout_s=timeout_s)
        fleet.check()
        summary = json.loads((run_dir / "driver.json").read_text())
        components = component_costs({c.name: c for c in (driver, *procs)}, summary)
    if summary["received"] != frames:
        raise BenchError(f"naive baseline: {summary['received']} of {frames} results")
    fps = rate({**summary, "received": summary["received"]}, "received")
    return {
        "workers": workers,
        "frames": frames,
        "fps": round(fps, 1),
        "mb_per_s": round(fps * size * size * np.dtype(dtype).itemsize / 1e6, 1),
        "result": "complex128 full spectrum, pickled",
        "cpu_ms_per_frame": total_cpu_ms(components),
        "components": components,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framepipe.bench.naive", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role", required=True)
    w = sub.add_parser("worker")
    w.add_argument("tasks")
    w.add_argument("results")
    w.add_argument("control")
    d = sub.add_parser("driver")
    for name in ("tasks", "results", "control"):
        d.add_argument(name)
    for name in ("workers", "frames", "size"):
        d.add_argument(name, type=int)
    d.add_argument("dtype")
    d.add_argument("summary")
    args = parser.parse_args(argv)
    if args.role == "worker":
        return _worker(args.tasks, args.results, args.control)
    urls = [args.tasks, args.results, args.control]
    return _driver(urls, args.workers, args.frames, args.size, args.dtype, args.summary)


if __name__ == "__main__":
    sys.exit(main())
