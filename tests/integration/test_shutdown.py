"""Clean stop by signal: every component, SIGINT and SIGTERM, real processes.

Each component, signalled mid-run, stops taking new frames, finishes or hands back its
in-flight work, closes its files and exits 0 within 5 s; the others carry on or follow
the end of stream. Files are then read back with plain h5py.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest

from framepipe.testing.deployment import Deployment, Proc
from framepipe.testing.streams import StreamWatcher, read_json

pytestmark = pytest.mark.integration

STOP_WITHIN_S = 5.0
SIGNALS = [pytest.param(signal.SIGINT, id="SIGINT"), pytest.param(signal.SIGTERM, id="SIGTERM")]


def _stop(proc: Proc, sig: int) -> float:
    """Signal ``proc``; assert it exits 0 within STOP_WITHIN_S; return how long it took."""
    t0 = time.monotonic()
    proc.signal(sig)
    try:
        code = proc.popen.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{proc.name} still running {STOP_WITHIN_S} s after {sig!r}:\n{proc.log()[-3000:]}"
        ) from None
    took = time.monotonic() - t0
    assert code == 0, f"{proc.name} exited {code} after {sig!r}:\n{proc.log()[-3000:]}"
    return took


def _readable(path: Path) -> tuple[list[int], dict[str, object]]:
    """Frame ids and ledger of a closed file, read with plain h5py."""
    with h5py.File(path, "r") as f:
        ids = f["entry/data/frame_id"][:].tolist()
        if ids:
            assert f["entry/data/frames"].shape[0] == len(ids)
        return ids, dict(f["entry/ledger"].attrs)


def _broadcast(dep: Deployment) -> tuple[Proc, Proc, StreamWatcher]:
    """publisher (endless, paced) → recorder-frames."""
    dep.settings.update(
        {
            "camera.count": 0,
            "camera.fps": 100.0,
            "camera.height": 32,
            "camera.width": 32,
            "publisher.subscribers": ["recorder-frames"],
        }
    )
    dep.write_config()
    rec = dep.start("recorder-frames", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = dep.start("publisher", "publisher")
    watcher = StreamWatcher(f"tcp://127.0.0.1:{dep.settings['publisher.frames_port']}")
    watcher.wait_distinct(30, timeout=60)
    return pub, rec, watcher


def _work(dep: Deployment) -> tuple[Proc, Proc, list[Proc], Proc, StreamWatcher]:
    """ventilator (camera, endless, paced) → 2 workers → sink → recorder-results."""
    dep.settings.update(
        {
            "camera.count": 0,
            "camera.fps": 100.0,
            "camera.height": 32,
            "camera.width": 32,
            "ventilator.source": "camera",
            "sink.subscribers": ["recorder-results"],
        }
    )
    dep.write_config()
    sink = dep.start("sink", "sink", "--summary-json", str(dep.dir / "sink.json"))
    sink.wait_for("ready:")
    watcher = StreamWatcher(f"tcp://127.0.0.1:{dep.settings['sink.results_port']}")
    rec = dep.start("recorder-results", "record", "--name", "recorder-results")
    workers = [dep.start(f"w{i}", "worker", "--index", str(i)) for i in range(2)]
    vent = dep.start("ventilator", "ventilator", "--summary-json", str(dep.dir / "ventilator.json"))
    watcher.wait_distinct(30, timeout=60)
    for proc in workers:  # a signal before the handlers are installed is not what we test
        proc.wait_for("ready:")
    return vent, sink, workers, rec, watcher


@pytest.mark.parametrize("sig", SIGNALS)
def test_publisher_stops_and_recorder_follows(deployment: Deployment, sig: int) -> None:
    pub, rec, watcher = _broadcast(deployment)
    try:
        _stop(pub, sig)
        assert rec.wait(15) == 0, rec.log()[-3000:]
    finally:
        watcher.close()
    ids, ledger = _readable(deployment.data / "run_frames.h5")
    assert len(ids) >= 30 and ids == list(range(len(ids))), "from the first frame, in order"
    assert bool(ledger["complete"]), "every frame the stopped stream carried is in the file"


@pytest.mark.parametrize("sig", SIGNALS)
def test_recorder_stops_with_its_file_closed(deployment: Deployment, sig: int) -> None:
    pub, rec, watcher = _broadcast(deployment)
    try:
        _stop(rec, sig)
        ids, ledger = _readable(deployment.data / "run_frames.h5")
        assert len(ids) >= 1 and not bool(ledger["complete"]), "stopped before the end: not complete"
        _stop(pub, signal.SIGTERM)  # and the publisher does not wait long for the departed
    finally:
        watcher.close()


@pytest.mark.parametrize("sig", SIGNALS)
def test_worker_stops_and_its_frames_are_done_by_others(deployment: Deployment, sig: int) -> None:
    vent, sink, workers, rec, watcher = _work(deployment)
    try:
        _stop(workers[0], sig)
        at = len(watcher.ids)
        watcher.wait_distinct(at + 30, timeout=60)  # the other worker carries on
        _stop(vent, signal.SIGTERM)
        for proc in (sink, rec, workers[1]):
            assert proc.wait(20) == 0, f"{proc.name}:\n{proc.log()[-3000:]}"
    finally:
        watcher.close()
    ids, ledger = _readable(deployment.data / "run_results.h5")
    accepted = read_json(deployment.dir / "ventilator.json")["accepted"]
    assert sorted(ids) == list(range(accepted)), "every accepted frame exactly once"
    assert bool(ledger["complete"])


@pytest.mark.parametrize("sig", SIGNALS)
def test_ventilator_stops_and_the_pipeline_drains(deployment: Deployment, sig: int) -> None:
    vent, sink, workers, rec, watcher = _work(deployment)
    try:
        _stop(vent, sig)
        for proc in (sink, rec, *workers):
            assert proc.wait(20) == 0, f"{proc.name}:\n{proc.log()[-3000:]}"
    finally:
        watcher.close()
    ids, ledger = _readable(deployment.data / "run_results.h5")
    summary = read_json(deployment.dir / "ventilator.json")
    assert summary.get("unacknowledged", 0) == 0, "in-flight work finished before the ventilator left"
    assert sorted(ids) == list(range(summary["accepted"]))
    assert bool(ledger["complete"])


@pytest.mark.parametrize("sig", SIGNALS)
def test_sink_stops_and_everyone_downstream_follows(deployment: Deployment, sig: int) -> None:
    vent, sink, workers, rec, watcher = _work(deployment)
    try:
        _stop(sink, sig)
        for proc in (rec, *workers):  # results stream ended, workers told to stop
            assert proc.wait(20) == 0, f"{proc.name}:\n{proc.log()[-3000:]}"
        _stop(vent, signal.SIGTERM)  # with no sink to confirm, it still leaves in time
    finally:
        watcher.close()
    ids, _ = _readable(deployment.data / "run_results.h5")
    summary = read_json(deployment.dir / "sink.json")
    assert len(ids) == summary["received"] and len(set(ids)) == len(ids)


# ---------------------------------------------------------------------------- framepipe run


def _children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, from /proc (no psutil)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command may contain spaces and parentheses: fields follow the last ")"
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def _gone_within(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (a pidfd becomes readable), within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def _start_run(dep: Deployment) -> tuple[Proc, list[int]]:
    dep.settings.update(
        {"camera.count": 0, "camera.fps": 50.0, "camera.height": 32, "camera.width": 32, "workers.count": 2}
    )
    dep.write_config()
    run = dep.start("run", "run")
    run.wait_for("all subscribers here: publishing", timeout=60)
    run.wait_for("ventilator released", timeout=60)
    kids = _children_of(run.pid)
    assert len(kids) == 7, f"sink, 2 workers, 2 recorders, ventilator, publisher: {kids}"
    watcher = StreamWatcher(f"tcp://127.0.0.1:{dep.settings['sink.results_port']}")
    try:
        watcher.wait_distinct(20, timeout=60)
    finally:
        watcher.close()
    return run, kids


@pytest.mark.parametrize("sig", SIGNALS)
def test_run_forwards_signals_drains_and_leaves_nothing_behind(deployment: Deployment, sig: int) -> None:
    run, kids = _start_run(deployment)
    run.signal(sig)
    code = run.wait(30)
    out = run.log()
    assert code == 0, f"run exited {code}:\n{out[-4000:]}"
    assert "every frame accounted for" in out and "NOT every frame" not in out
    for pid in kids:
        assert _gone_within(pid, 1.0), f"child {pid} outlived `framepipe run`"
    for stream in ("frames", "results"):
        ids, ledger = _readable(deployment.data / f"run_{stream}.h5")
        assert len(ids) >= 20 and sorted(ids) == list(range(len(ids)))
        assert bool(ledger["complete"])


def test_killed_run_takes_its_children_with_it(deployment: Deployment) -> None:
    run, kids = _start_run(deployment)
    run.signal(signal.SIGKILL)
    for pid in kids:
        assert _gone_within(pid, 15.0), f"child {pid} orphaned by a SIGKILLed `framepipe run`"


# ---------------------------------------------------------------------------- bounded waits


def test_ventilator_without_a_sink_fails_clearly_in_bounded_time(deployment: Deployment) -> None:
    deployment.settings.update({"ventilator.source": "camera", "ventilator.sync_timeout_s": 2.0})
    deployment.write_config()
    done = deployment.run_cli("ventilator", timeout=30)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("framepipe ventilator: error: no answer from the sink") and "is it running?" in last


def test_ventilator_with_a_sink_but_no_worker_says_so(deployment: Deployment) -> None:
    deployment.settings.update(
        {"ventilator.source": "camera", "ventilator.sync_timeout_s": 3.0, "sink.subscribers": []}
    )
    deployment.write_config()
    sink = deployment.start("sink", "sink")
    sink.wait_for("ready:")
    done = deployment.run_cli("ventilator", timeout=30)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "was not ready within 3 s: still waiting for a worker" in last, done.stderr[-2000:]
    # and a worker arriving later is all it takes
    worker = deployment.start("w0", "worker")
    worker.wait_for("ready:")
    vent = deployment.start("ventilator", "ventilator", "--set", "camera.count=20")
    assert vent.wait(60) == 0, vent.log()[-3000:]
    assert sink.wait(60) == 0, sink.log()[-3000:]


def test_publisher_end_does_not_wait_for_a_departed_subscriber(deployment: Deployment) -> None:
    deployment.settings.update(
        {
            "camera.count": 300,
            "camera.fps": 100.0,
            "camera.height": 32,
            "camera.width": 32,
            "publisher.subscribers": ["recorder-frames"],
            "run.finish_timeout_s": 60,
        }
    )
    deployment.write_config()
    rec = deployment.start("recorder-frames", "record", "--name", "recorder-frames")
    rec.wait_for("ready:")
    pub = deployment.start("publisher", "publisher")
    pub.wait_for("all subscribers here: publishing")
    _stop(rec, signal.SIGTERM)  # leaves mid-run, without a bye
    pub.wait_for("end of stream (complete) after 300 frames", timeout=60)
    t_end = time.monotonic()
    assert pub.wait(30) == 0, pub.log()[-3000:]
    assert time.monotonic() - t_end < 10, "the publisher waited for a subscriber that had left"
