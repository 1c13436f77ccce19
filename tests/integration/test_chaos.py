"""Exactly-once work distribution through worker failures, with real processes and signals.

- chaos: 2000 frames through 3 workers; after a clean start, one worker is SIGKILLed every
  100 frames and a replacement started. The sink must hold every frame id exactly once
  (its --summary-json, the results stream, and the results HDF5 file read with h5py).
  Run twice: raw frames read by the ventilator from the camera, and frames compressed once
  by a publisher (``publisher.wire_compression = "bitshuffle-lz4"``), forwarded compressed
  by the ventilator, re-dispatched compressed, decoded by the workers.
- hung worker: SIGSTOP one worker; its frames are re-dispatched and the run goes on; on
  SIGCONT its late results reach the sink and are dropped as duplicates.

Set FRAMEPIPE_CHAOS_REPORT=FILE to append one JSON line of measurements per chaos run
(scripts/chaos-loop.sh does, for the 10× loop).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.testing.deployment import Deployment, Proc
from framepipe.testing.streams import StreamWatcher, read_json

# chaos, SIGSTOP, restarts and fuzz through shared memory (the same-host default) and TCP
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_memory")]

H, W, SEED = 64, 64, 3
#: camera rate of the chaos run: 2000 frames in ~20 s, a worker SIGKILLed every ~second
FPS = 100.0


def _configure(dep: Deployment, n: int, wire: str = "none", **extra: object) -> None:
    """By TCP with ``wire="none"``: the ventilator reads the camera (the work path alone). A
    compressed wire needs the publisher (it compresses), and so does shared memory (the
    frames go through the publisher's ring): the ventilator subscribes to it, the only
    subscriber it waits for."""
    if _from_publisher(dep, wire):
        extra = {
            "ventilator.source": "publisher",
            "publisher.wire_compression": wire,
            "publisher.subscribers": ["ventilator"],
            **extra,
        }
    dep.settings.update(
        {
            "camera.count": n,
            "camera.height": H,
            "camera.width": W,
            "camera.seed": SEED,
            "ventilator.source": "camera",  # no publisher: the work path alone is under test
            "sink.subscribers": ["recorder-results"],
            "run.finish_timeout_s": 60,
            **extra,
        }
    )
    dep.write_config()


def _from_publisher(dep: Deployment, wire: str = "none") -> bool:
    return wire != "none" or bool(dep.settings.get("transport.shared_memory", True))


def _start_source(dep: Deployment) -> Proc | None:
    """The publisher, when the frames come from it (after the ventilator: it waits for it)."""
    if dep.settings.get("ventilator.source") != "publisher":
        return None
    return dep.start("publisher", "publisher")


def _start_core(dep: Deployment, workers: int) -> tuple[Proc, Proc, list[Proc], StreamWatcher]:
    sink = dep.start("sink", "sink", "--summary-json", str(dep.dir / "sink.json"))
    sink.wait_for("ready:")
    watcher = StreamWatcher(f"tcp://127.0.0.1:{dep.settings['sink.results_port']}")
    recorder = dep.start("recorder-results", "record", "--name", "recorder-results")
    pool = [dep.start(f"w{i}", "worker", "--index", str(i)) for i in range(workers)]
    return sink, recorder, pool, watcher


def _worker_name(proc: Proc, timeout: float = 30.0) -> str:
    """The name a worker reports itself under (worker-host-pid-index), from its log."""
    out = proc.wait_for("ready:", timeout)
    m = re.search(r"(worker-\S+-\d+-\d+)\s+INFO\s+ready:", out)
    assert m, out
    return m.group(1)


def _stop_worker(proc: Proc) -> None:
    """A worker stops on the sink's stop message; one that connected after the sink
    ended waits for the next run (workers come and go), so SIGTERM it: exit 0 either way."""
    try:
        code = proc.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        assert "stop from the sink" not in proc.log()
        proc.signal(signal.SIGTERM)
        code = proc.wait(5)
    assert code == 0, f"{proc.name} failed:\n{proc.log()[-3000:]}"


def _check_results_file(path: Path, n: int) -> None:
    with h5py.File(path, "r") as f:
        ids = f["entry/data/frame_id"][:]
        assert len(ids) == n, f"{len(ids)} rows for {n} frames"
        assert sorted(ids.tolist()) == list(range(n)), "every result exactly once in the file"
        spectra = f["entry/data/frames"]
        for row in range(0, n, 97):
            fid = int(ids[row])
            ref = np.abs(np.fft.rfft2(synthetic_frame(fid, H, W, "uint16", seed=SEED).astype(np.float64))) ** 2
            np.testing.assert_allclose(spectra[row], ref, rtol=1e-4, atol=ref.max() * 1e-6)
        ledger = f["entry/ledger"].attrs
        assert bool(ledger["complete"]) and int(ledger["missing"]) == 0


@pytest.mark.parametrize("wire", ["none", "bitshuffle-lz4"])
def test_chaos_sigkill_a_worker_every_100_frames(deployment: Deployment, wire: str) -> None:
    n, warmup, every = 2000, 300, 100
    # paced, so that workers die every ~second, which a replacement can keep up with
    _configure(deployment, n, wire, **{"camera.fps": FPS})
    sink, recorder, pool, watcher = _start_core(deployment, 3)
    vent = deployment.start("ventilator", "ventilator", "--summary-json", str(deployment.dir / "ventilator.json"))
    publisher = _start_source(deployment)
    live = list(pool)
    kills: list[tuple[float, str]] = []  # (monotonic time of SIGKILL, worker name)
    detected_sink: dict[str, float] = {}
    detected_vent: dict[str, float] = {}
    next_kill = warmup
    deadline = time.monotonic() + 240
    try:
        while watcher.eos is None and len(watcher.ids) < n:
            assert time.monotonic() < deadline, f"stalled at {len(watcher.ids)} results"
            assert vent.popen.poll() is None or vent.popen.returncode == 0, vent.log()[-3000:]
            watcher.pump()
            # the victim: the oldest worker that is up (a replacement still starting
            # Python is not a worker yet), and never the last one up: on a loaded
            # machine 100 frames can go by faster than a replacement starts, and then
            # the kill waits for it
            ready = [p for p in live if "ready:" in p.log()]
            if len(watcher.ids) >= next_kill and next_kill < n and len(ready) >= 2:
                victim = ready[0]
                live.remove(victim)
                name = _worker_name(victim)
                victim.signal(signal.SIGKILL)
                kills.append((time.monotonic(), name))
                index = 3 + len(kills)
                new = deployment.start(f"w{index}", "worker", "--index", str(index))
                live.append(new)
                # one kill per 100 frames seen, even when results arrive in big bursts
                next_kill = (len(watcher.ids) // every + 1) * every
            # when did the sink and the ventilator name each dead worker?
            if kills:
                slog, vlog = sink.log(), vent.log()
                for t_kill, name in kills:
                    if name not in detected_sink and f"worker {name} lost" in slog:
                        detected_sink[name] = time.monotonic() - t_kill
                    if name not in detected_vent and f"worker {name} lost" in vlog:
                        detected_vent[name] = time.monotonic() - t_kill
        for proc in (vent, sink, recorder, *([publisher] if publisher else [])):
            assert proc.wait(120) == 0, f"{proc.name} failed:\n{proc.log()[-4000:]}"
        for proc in live:
            _stop_worker(proc)
        watcher.pump(200)
    finally:
        watcher.close()

    vent_summary = read_json(deployment.dir / "ventilator.json")
    raw_bytes = n * H * W * 2  # uint16
    if wire != "none":
        # the frames really travelled compressed: the payloads the ventilator took in (and
        # forwarded, re-dispatches too) are the publisher's chunks, smaller than the pixels
        assert publisher is not None and f"wire_compression={wire}" in publisher.log()
        assert 0 < vent_summary["bytes"] < raw_bytes, vent_summary
    else:
        assert vent_summary["bytes"] == raw_bytes, vent_summary
    if deployment.settings["transport.shared_memory"]:
        # the frames went through the publisher's ring, to workers that read it in place
        assert vent_summary["transport"] == "shared memory" and vent_summary["tasks_local"] >= 0.9 * n, vent_summary
    summary = read_json(deployment.dir / "sink.json")
    assert summary["received"] == n and summary["missing"] == 0 and summary["expected"] == n
    assert sum(summary["per_worker"].values()) == n
    # replacements joined mid-run and got work (each was killed only once it was up)
    assert len(summary["per_worker"]) >= min(len(kills), 3) + 3, summary["per_worker"]
    # ~one per 100 frames after the warm-up (fewer if replacements start slowly)
    assert len(kills) >= (n - warmup) // every // 2
    assert set(watcher.ids) == set(range(n)), "results stream: every id"
    assert max(watcher.ids.values()) == 1, "results stream: no id twice"
    _check_results_file(deployment.data / "run_results.h5", n)
    # every worker killed long enough before the end was named by the sink and the
    # ventilator, within a few seconds (heartbeat silence of sink.worker_timeout_s)
    timeout = float(deployment.settings.get("sink.worker_timeout_s", 3.0))
    t_end = max(watcher.arrivals.values())
    slog, vlog = sink.log(), vent.log()
    for t_kill, name in kills:
        if t_end - t_kill > timeout + 2.0:
            assert f"worker {name} lost" in slog, f"sink never reported {name}"
            assert f"worker {name} lost" in vlog, f"ventilator never reported {name}"
    assert detected_sink, "no dead worker was reported"
    assert max(detected_sink.values()) < timeout + 5.0

    # measurements for the closing note (printed, and appended to a report if asked)
    arrivals = watcher.arrivals
    t_first = min(arrivals.values())
    t_warm = sorted(arrivals.values())[warmup - 1]
    t_last = max(arrivals.values())
    report = {
        "wire": wire,
        "frames": n,
        "kills": len(kills),
        "workers_that_did_work": len(summary["per_worker"]),
        "lost": n - summary["received"],
        "duplicates_dropped": summary.get("duplicates", 0),
        "redispatched": vent_summary.get("redispatched"),
        "detect_sink_s": sorted(round(v, 2) for v in detected_sink.values()),
        "detect_ventilator_s": sorted(round(v, 2) for v in detected_vent.values()),
        "camera_fps": FPS,
        "fps_no_failure": round((warmup - 1) / (t_warm - t_first), 1),
        "fps_with_failures": round((n - warmup) / (t_last - t_warm), 1),
    }
    print(json.dumps(report))
    if os.environ.get("FRAMEPIPE_CHAOS_REPORT"):
        with open(os.environ["FRAMEPIPE_CHAOS_REPORT"], "a") as fh:
            fh.write(json.dumps(report) + "\n")


def test_hung_worker_frames_redispatched_and_late_results_dropped(deployment: Deployment) -> None:
    n = 1200
    # paced, so the run is still going when the hung worker resumes
    _configure(deployment, n, **{"camera.fps": 150.0})
    sink, recorder, pool, watcher = _start_core(deployment, 3)
    vent = deployment.start("ventilator", "ventilator", "--summary-json", str(deployment.dir / "ventilator.json"))
    source = _start_source(deployment)
    hung = pool[0]
    name = _worker_name(hung)
    try:
        watcher.wait_distinct(150, timeout=60)
        hung.signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        sink.wait_for(f"worker {name} lost", timeout=30)
        detected = time.monotonic() - t_stop
        # the ventilator names it too, and stops feeding it (heartbeat timeout)
        vent.wait_for(f"worker {name} lost", timeout=30)
        if not deployment.settings["transport.shared_memory"]:
            # by TCP its connection is closed (ZMTP heartbeat timeout); a same-host worker's
            # is not (see ventilator.py): the sink's "lost" above hands its frames back
            vent.wait_for("a worker disconnected", timeout=30)
        at_stop = len(watcher.ids)
        watcher.wait_distinct(at_stop + 100, timeout=60)  # the run goes on without it
        assert watcher.eos is None, "resume it while the run is still going"
        hung.signal(signal.SIGCONT)
        for proc in (vent, sink, recorder, *([source] if source else [])):
            assert proc.wait(120) == 0, f"{proc.name} failed:\n{proc.log()[-4000:]}"
        for proc in pool:
            _stop_worker(proc)
        watcher.pump(200)
    finally:
        hung.signal(signal.SIGCONT)
        watcher.close()

    summary = read_json(deployment.dir / "sink.json")
    assert summary["received"] == n and summary["missing"] == 0
    if deployment.settings["transport.shared_memory"]:
        # its frames' slots were acknowledged and reused meanwhile: it sees that, and sends no
        # late result at all (or, for a frame it read just before, a duplicate the sink drops)
        assert "was reused" in hung.log() or summary["duplicates"] > 0
    else:
        assert summary["duplicates"] > 0, "the resumed worker's late results were dropped as duplicates"
    assert name in summary["workers_lost"]
    assert "processed" in hung.log() and hung.popen.returncode == 0
    assert max(watcher.ids.values()) == 1 and set(watcher.ids) == set(range(n))
    _check_results_file(deployment.data / "run_results.h5", n)
    print(json.dumps({"hung_detect_sink_s": round(detected, 2), "duplicates_dropped": summary["duplicates"]}))


def test_sink_restarted_mid_run_rejoins_and_the_gap_is_accounted(deployment: Deployment) -> None:
    n = 600
    _configure(deployment, n, **{"camera.fps": 100.0})
    first, recorder, pool, watcher = _start_core(deployment, 2)
    vent = deployment.start("ventilator", "ventilator", "--summary-json", str(deployment.dir / "ventilator.json"))
    source = _start_source(deployment)
    try:
        watcher.wait_distinct(150, timeout=60)
        first.signal(signal.SIGKILL)
        first.wait(10)
        second = deployment.start("sink2", "sink", "--summary-json", str(deployment.dir / "sink2.json"))
        second.wait_for("ready:")
        for proc in (vent, second, recorder, *([source] if source else [])):
            assert proc.wait(120) == 0, f"{proc.name} failed:\n{proc.log()[-4000:]}"
        for proc in pool:
            _stop_worker(proc)
    finally:
        watcher.close()

    summary = read_json(deployment.dir / "sink2.json")
    assert summary["missing"] == 0 and summary["expected"] == n
    assert summary["acknowledged_elsewhere"] > 0, "the first sink's share is counted, not waited for"
    assert summary["received"] + summary["acknowledged_elsewhere"] == n
    assert read_json(deployment.dir / "ventilator.json").get("unacknowledged", 0) == 0
    with h5py.File(deployment.data / "run_results.h5", "r") as f:
        ids = f["entry/data/frame_id"][:].tolist()
        ledger = dict(f["entry/ledger"].attrs)
        missing_ids = f["entry/ledger/missing_ids"][:].tolist()
    assert len(set(ids)) == len(ids), "no result twice in the file"
    # whatever the first sink had not delivered when it died is named in the file's ledger
    assert sorted(missing_ids) == sorted(set(range(n)) - set(ids))
    assert int(ledger["missing"]) == n - len(ids)
    assert bool(ledger["complete"]) == (len(ids) == n)


def test_throughput_before_and_after_a_worker_failure(deployment: Deployment) -> None:
    """Unpaced: frames/s through the acknowledged pipeline, and what one SIGKILL costs (same run)."""
    n, kill_at = 3000, 1500
    _configure(deployment, n)
    sink, recorder, pool, watcher = _start_core(deployment, 3)
    for w in pool:
        w.wait_for("ready:")
    vent = deployment.start("ventilator", "ventilator", "--summary-json", str(deployment.dir / "ventilator.json"))
    source = _start_source(deployment)
    try:
        watcher.wait_distinct(kill_at, timeout=120)
        pool[0].signal(signal.SIGKILL)
        t_kill = time.monotonic()
        for proc in (vent, sink, recorder, *([source] if source else [])):
            assert proc.wait(120) == 0, f"{proc.name} failed:\n{proc.log()[-4000:]}"
        for proc in pool[1:]:
            _stop_worker(proc)
        watcher.pump(200)
    finally:
        watcher.close()
    summary = read_json(deployment.dir / "sink.json")
    assert summary["received"] == n and summary["missing"] == 0
    assert set(watcher.ids) == set(range(n)) and max(watcher.ids.values()) == 1
    times = sorted(watcher.arrivals.values())
    warm = 200  # leave out the start
    before = (kill_at - warm) / (times[kill_at - 1] - times[warm])
    after = (n - kill_at) / (times[-1] - times[kill_at - 1])
    report = {
        "throughput_fps_before_failure": round(before, 1),
        "throughput_fps_after_failure": round(after, 1),
        "failure_cost_s": round((times[-1] - t_kill) - (n - kill_at) / before, 3),
        "duplicates_dropped": summary.get("duplicates", 0),
        "redispatched": read_json(deployment.dir / "ventilator.json").get("redispatched", 0),
    }
    print(json.dumps(report))
    if os.environ.get("FRAMEPIPE_CHAOS_REPORT"):
        with open(os.environ["FRAMEPIPE_CHAOS_REPORT"], "a") as fh:
            fh.write(json.dumps(report) + "\n")
