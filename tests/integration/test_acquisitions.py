"""A standing deployment driven acquisition by acquisition (`framepipe run --serve`,
`acquire`, `stop`, `snap`, `shutdown`), with real processes on loopback.

Every check reads the files with plain h5py and compares them with what the synthetic
camera produced for that acquisition (its frame ids and pixels), never with the ledger alone.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  (bitshuffle-lz4 frames)
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.testing.deployment import Deployment, Proc
from framepipe.testing.files import open_any, rows

pytestmark = pytest.mark.integration

PATH = "{data_dir}/{run}_{acquisition:04d}_{acquisition_name}_{stream}.h5"
#: with the run id: a restarted publisher's acquisition 1 is another file
PATH_WITH_RUN_ID = "{data_dir}/{run}_{run_id}_{acquisition:04d}_{acquisition_name}_{stream}.h5"


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(
        tmp_path,
        {
            "run.name": "lab",
            "camera.width": 64,
            "camera.height": 48,
            "camera.reel_frames": 0,
            "camera.seed": 3,
            "recorders": [
                {"name": f"recorder-{stream}", "stream": stream, "path": PATH, "flush_frames": 1}
                for stream in ("frames", "results")
            ],
        },
    )
    yield d
    d.close()


def serve(d: Deployment, *extra: str) -> Proc:
    proc = d.start("run", "run", "--serve", "--no-tui", *extra)
    # ready to acquire: the control endpoint answers and the frames subscribers are there
    proc.wait_until(lambda: acquire_ready(d), "subscribers connected", 60)
    return proc


def acquire_ready(d: Deployment) -> bool | None:
    out = d.run_cli("acquire", "--frames", "0", "--no-wait", "--set", "camera.fps=-1", timeout=20)
    # a refusal naming the setting means every component is here (a missing one is refused first)
    return True if "camera.fps" in out.stderr else None


def acquire(d: Deployment, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return d.run_cli("acquire", *args, timeout=timeout)


def frames_in(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    with h5py.File(path, "r") as f:
        ids = f["entry/data/frame_id"][:]
        frames = f["entry/data/frames"][:] if "frames" in f["entry/data"] else np.empty(0)
        ledger = dict(f["entry/ledger"].attrs) if "ledger" in f["entry"] else {}
        ledger["entry"] = dict(f["entry"].attrs)
        ledger["camera"] = dict(f["entry/instrument/camera"].attrs)
    return ids, frames, ledger


def files(d: Deployment, acq: int, name: str) -> tuple[Path, Path]:
    return d.data / f"lab_{acq:04d}_{name}_frames.h5", d.data / f"lab_{acq:04d}_{name}_results.h5"


def assert_exact(d: Deployment, acq: int, name: str, count: int, height: int, width: int) -> None:
    """The acquisition's files hold every frame the camera produced, exactly once, pixel-exact."""
    frames_file, results_file = files(d, acq, name)
    ids, frames, ledger = frames_in(frames_file)
    assert sorted(ids.tolist()) == list(range(count)), f"{frames_file.name}: ids {ids.tolist()[:20]}…"
    assert frames.shape == (count, height, width)
    for row, fid in enumerate(ids):
        sent = synthetic_frame(int(fid), height, width, "uint16", seed=3, reel_frames=0)
        np.testing.assert_array_equal(frames[row], sent)
    assert ledger["complete"] and ledger["end_reason"] == "complete"
    assert ledger["entry"]["acquisition"] == acq and ledger["entry"]["acquisition_name"] == name
    rids, _, rledger = frames_in(results_file)
    assert sorted(rids.tolist()) == list(range(count)), f"{results_file.name} lacks ids"
    assert rledger["complete"]


def test_three_acquisitions_in_a_row_on_one_standing_deployment(deployment: Deployment) -> None:
    d = deployment
    run = serve(d)
    pids = {p.pid for p in d.procs}
    plan = [("first", 30, 48, 64), ("second", 75, 32, 40), ("third", 12, 64, 96)]
    for index, (name, count, height, width) in enumerate(plan, start=1):
        out = acquire(
            d,
            "--frames",
            str(count),
            "--name",
            name,
            "--set",
            f"camera.height={height}",
            "--set",
            f"camera.width={width}",
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "every frame accounted for" in out.stdout
        assert_exact(d, index, name, count, height, width)
        # each file records its own acquisition's settings, from its start message
        _, _, ledger = frames_in(files(d, index, name)[0])
        assert json.loads(ledger["entry"]["config"])["camera"]["width"] == width
    out = d.run_cli("shutdown")
    assert out.returncode == 0, out.stderr
    assert run.wait(60) == 0, run.log()
    assert pids == {p.pid for p in d.procs}
    assert "restarting" not in run.log(), "no process restarted between acquisitions"
    assert "3 acquisition(s)" in run.log()


def test_stop_mid_acquisition_drains_and_files_say_stopped(deployment: Deployment) -> None:
    d = deployment
    d.settings["camera.fps"] = 100
    d.write_config()
    run = serve(d)
    started = acquire(d, "--frames", "0", "--name", "endless", "--no-wait")
    assert started.returncode == 0 and started.stdout.strip() == "1", started.stderr
    # frames are flowing once the file has some (flush_frames = 1)
    frames_file, results_file = files(d, 1, "endless")
    run.wait_until(lambda: (frames_file.exists() and rows(frames_file) >= 20) or None, "frames in the file", 60)
    snap = d.run_cli("snap", "--npy", str(d.dir / "live.npy"), "--png", str(d.dir / "live.png"))
    assert snap.returncode == 0, snap.stderr
    assert np.load(d.dir / "live.npy").shape == (48, 64)
    assert (d.dir / "live.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    busy = acquire(d, "--frames", "5", "--name", "other", "--no-wait")
    assert busy.returncode == 1 and "busy" in busy.stderr, busy.stderr
    out = d.run_cli("stop")
    assert out.returncode == 0, out.stderr
    run.wait_for("acquisition 1 'endless' accounted for", 60)
    waited = d.run_cli("wait", "1")  # the summary of an acquisition started with --no-wait
    assert waited.returncode == 0 and "acquisition 1 'endless': stopped" in waited.stdout, waited.stdout
    ids, _, ledger = frames_in(frames_file)
    rids, _, rledger = frames_in(results_file)
    published = int(run.wait_for("end of stream (stopped) after", 5).split("after ")[1].split()[0])
    # a stop drains: everything the camera produced is in both files
    assert len(ids) == published and sorted(ids.tolist()) == list(range(published))
    assert sorted(rids.tolist()) == list(range(published))
    assert ledger["end_reason"] == "stopped" and rledger["end_reason"] == "stopped"
    assert ledger["complete"] and rledger["complete"], "a stop that drained holds every frame"
    assert not files(d, 1, "other")[0].exists()
    # idle: a snap grabs a frame now
    snap = d.run_cli("snap", "--npy", str(d.dir / "idle.npy"))
    assert snap.returncode == 0, snap.stderr
    np.testing.assert_array_equal(
        np.load(d.dir / "idle.npy"), synthetic_frame(0, 48, 64, "uint16", seed=3, reel_frames=0)
    )
    d.run_cli("shutdown")
    assert run.wait(60) == 0, run.log()


def test_refused_requests_change_nothing(deployment: Deployment) -> None:
    d = deployment
    run = serve(d)
    bad = acquire(d, "--frames", "10", "--set", "camera.width=0")
    assert bad.returncode == 1 and "camera.width" in bad.stderr and "greater than 0" in bad.stderr
    bad = acquire(d, "--frames", "10", "--set", "camera.colour=rgb")
    assert bad.returncode == 1 and "not a per-acquisition setting" in bad.stderr
    # malformed and forged requests on the control port: counted, answered, nothing changes
    import zmq

    ctx = zmq.Context()
    port = d.settings["publisher.control_port"]
    for payload in ([b"not json"], [b'{"v":1,"kind":"acquire","name":"x","frames":-1}'], [b"[" * 5000]):
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port}")
        sock.send_multipart(payload)
        assert sock.poll(5000), "no answer to a malformed request"
        assert b"error" in sock.recv()
        sock.close()
    ctx.term()
    assert not any(d.data.glob("*.h5")), "a refused acquisition created a file"
    out = acquire(d, "--frames", "8", "--name", "after")
    assert out.returncode == 0, out.stdout + out.stderr
    assert_exact(d, 1, "after", 8, 48, 64)  # ids start at 1: the refusals used none
    d.run_cli("shutdown")
    assert run.wait(60) == 0


def test_a_recorder_killed_between_acquisitions_is_restarted_and_the_next_file_is_complete(
    deployment: Deployment,
) -> None:
    d = deployment
    run = serve(d)
    assert acquire(d, "--frames", "20", "--name", "a").returncode == 0
    killed = _kill_child(run, "recorder-frames")
    run.wait_for("recorder-frames exited with code -9", 30)
    run.wait_until(lambda: acquire_ready(d), "recorder back", 60)
    out = acquire(d, "--frames", "25", "--name", "b")
    assert out.returncode == 0, out.stdout + out.stderr
    assert_exact(d, 2, "b", 25, 48, 64)
    assert killed
    d.run_cli("shutdown")
    assert run.wait(60) == 0
    assert "restarts: recorder-frames 1×" in run.log()


def test_a_worker_killed_mid_acquisition_is_replaced_and_every_frame_is_there_once(deployment: Deployment) -> None:
    d = deployment
    d.settings.update({"camera.fps": 200, "camera.count": 1000, "workers.count": 2})
    d.write_config()
    run = d.start("run", "run", "--no-tui")
    frames_file = d.data / "lab_0001_lab_frames.h5"
    run.wait_until(lambda: (frames_file.exists() and rows(frames_file) >= 200) or None, "frames flowing", 60)
    assert _kill_child(run, "worker-0")
    assert run.wait(120) == 0, run.log()[-3000:]
    assert "worker-0 exited with code -9" in run.log() and "restarts: worker-0 1×" in run.log()
    assert_exact(d, 1, "lab", 1000, 48, 64)


def _kill_child(run: Proc, name: str) -> bool:
    """SIGKILL the child of ``run`` whose command line names component ``name``."""
    import os

    marker = {
        "recorder-frames": ["record", "--name", "recorder-frames"],
        "worker-0": ["worker", "--index", "0"],
        "publisher": ["publisher"],
    }[name]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        args = [c.decode() for c in cmd]
        if ppid == run.pid and all(m in args for m in marker):
            window = args[args.index(marker[0]) : args.index(marker[0]) + len(marker)]
            if window == marker:
                os.kill(int(pid), signal.SIGKILL)
                return True
    return False


def test_a_recorder_killed_mid_acquisition_rejoins_in_a_part_file_and_the_parts_add_up(
    deployment: Deployment,
) -> None:
    d = deployment
    d.settings["camera.fps"] = 100
    d.write_config()
    run = serve(d)
    started = acquire(d, "--frames", "600", "--name", "cut", "--no-wait")
    assert started.returncode == 0, started.stderr
    first, _ = files(d, 1, "cut")
    run.wait_until(lambda: rows(first) >= 100 or None, "frames in the first part", 60)
    assert _kill_child(run, "recorder-frames")
    run.wait_for("acquisition 1 'cut' accounted for", 120)
    part2 = first.with_name(first.stem + "-part2.h5")
    assert part2.exists(), "the restarted recorder rejoined the acquisition in a part file"
    with open_any(first) as f:
        held = set(f["entry/data/frame_id"][:].tolist())
    ids, _, ledger = frames_in(part2)
    held |= set(ids.tolist())
    with h5py.File(part2, "r") as f:
        missing = sorted(f["entry/ledger/missing_ids"][:].tolist())
    truly_missing = sorted(set(range(600)) - held)
    assert missing == truly_missing, "the ledger adds up both parts, against what the camera produced"
    assert bool(ledger["complete"]) == (not truly_missing)
    d.run_cli("shutdown")
    assert run.wait(60) == 0
    assert "restarts: recorder-frames 1×" in run.log()


def test_a_killed_publisher_ends_its_acquisition_as_upstream_lost_and_the_next_one_is_complete(
    deployment: Deployment,
) -> None:
    d = deployment
    d.settings.update({"camera.fps": 100, "limits.upstream_timeout_s": 3})
    for rec in d.settings["recorders"]:
        rec["path"] = PATH_WITH_RUN_ID
    d.write_config()
    run = serve(d)
    assert acquire(d, "--frames", "0", "--name", "cut", "--no-wait").returncode == 0
    (cut,) = _wait_glob(d, "*_0001_cut_frames.h5")
    run.wait_until(lambda: rows(cut) >= 50 or None, "frames flowing", 60)
    ring = re.search(r"shared_memory=ring (\S+) ", run.log())
    assert ring, "the publisher made its shared-memory ring"
    old_ring = Path("/dev/shm", ring.group(1))
    assert old_ring.exists()
    assert _kill_child(run, "publisher")
    run.wait_for("publisher exited with code -9", 30)
    # the recorders notice within limits.upstream_timeout_s and close the file, not complete
    run.wait_until(lambda: "ends as upstream lost" in run.log() or None, "upstream lost", 60)
    run.wait_until(lambda: acquire_ready(d), "the new publisher has its subscribers", 60)
    out = acquire(d, "--frames", "30", "--name", "after")
    assert out.returncode == 0, out.stdout + out.stderr
    (after,) = _wait_glob(d, "*_0001_after_frames.h5")
    ids, _, ledger = frames_in(after)
    assert sorted(ids.tolist()) == list(range(30)) and ledger["complete"]
    _, _, lost = frames_in(cut)
    assert not lost["complete"] and lost["end_reason"] == "upstream lost"
    assert after.name.split("_0001_")[0] != cut.name.split("_0001_")[0], "a new publisher, a new run id"
    # the killed publisher's ring was removed by its successor at start, and no segment outlives the deployment
    assert not old_ring.exists() and f"removed {old_ring.name}" in run.log()
    d.run_cli("shutdown")
    assert run.wait(60) == 0
    prefix = old_ring.name.rsplit("-", 2)[0]  # framepipe-<run>-frames
    assert not list(Path("/dev/shm").glob(prefix + "-*")), "nothing left in /dev/shm"


def _wait_glob(d: Deployment, pattern: str) -> list[Path]:
    def found() -> list[Path] | None:
        return sorted(d.data.glob(pattern)) or None

    return Proc.wait_until(d.procs[0], found, pattern, 30)
