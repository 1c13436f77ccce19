"""The recorder as a real process, fed a hand-built frames stream over tcp; files read back
with plain h5py + hdf5plugin (and HDF5's h5dump where installed), never framepipe code."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest

from framepipe.cameras import synthetic_frame
from framepipe.cameras.replay import ReplayCamera
from framepipe.config import CameraConfig
from framepipe.testing.deployment import Deployment, Proc, child_env
from framepipe.testing.feeder import StreamFeeder

pytestmark = pytest.mark.integration

H, W = 48, 64


def frame(k: int) -> np.ndarray:
    return synthetic_frame(k, H, W, "uint16", seed=3)


@pytest.fixture
def feeder(deployment: Deployment) -> Iterator[StreamFeeder]:
    s = deployment.settings
    f = StreamFeeder(s["publisher.frames_port"], s["publisher.sync_port"])
    try:
        yield f
    finally:
        f.close()


def start_recorder(deployment: Deployment, *sets: str, name: str = "rec") -> Proc:
    args = ["record", "--name", "recorder-frames", "--summary-json", str(deployment.dir / f"{name}.json")]
    for item in sets:
        args += ["--set", item]
    proc = deployment.start(name, *args)
    proc.wait_for("ready:")
    return proc


@pytest.mark.parametrize("compression", ["none", "bitshuffle-lz4", "blosc-lz4", "gzip"])
def test_layout_and_pixel_exact_frames(deployment: Deployment, feeder: StreamFeeder, compression: str) -> None:
    rec = start_recorder(deployment, f"recorders.0.compression={compression}")
    feeder.wait_for_subscribers()
    for k in range(40):
        feeder.send(k, frame(k))
    feeder.finish()
    assert rec.wait(60) == 0, rec.log()

    path = deployment.data / "run_frames.h5"
    with h5py.File(path, "r") as f:
        entry = f["entry"]
        assert entry.attrs["NX_class"] == "NXentry"
        for key in ("start_time", "end_time", "framepipe_version", "host", "run_id"):
            assert entry.attrs[key], key
        assert json.loads(entry.attrs["config"])["recorder"]["compression"] == compression
        data = f["entry/data"]
        assert data.attrs["NX_class"] == "NXdata" and data.attrs["signal"] == "frames"
        frames = data["frames"]
        assert frames.shape == (40, H, W) and frames.dtype == np.uint16 and frames.chunks == (1, H, W)
        assert data["frame_id"][:].tolist() == list(range(40))
        assert len(data["t_acq_ns"]) == len(data["t_recv_ns"]) == 40
        assert np.all(data["t_recv_ns"][:] >= data["t_acq_ns"][:])
        for k in range(40):
            np.testing.assert_array_equal(frames[k], frame(k))
        filters = frames._filters
        expected_filter = {
            "none": None,
            "bitshuffle-lz4": str(hdf5plugin.BSHUF_ID),
            "blosc-lz4": str(hdf5plugin.BLOSC_ID),
            "gzip": "gzip",
        }[compression]
        if expected_filter is None:
            assert not filters
        else:
            assert expected_filter in filters
        cam = f["entry/instrument/camera"]
        assert cam.attrs["model"] == "hand-built stream" and cam.attrs["exposure_us"] == 125.0
        ledger = f["entry/ledger"]
        assert bool(ledger.attrs["complete"])
        assert ledger.attrs["written"] == 40 and ledger.attrs["missing"] == 0
        assert ledger["missing_ids"].shape == (0,)

    if shutil.which("h5dump"):
        # an independent reader: HDF5's own tool, finding the filters through HDF5_PLUGIN_PATH
        out = subprocess.run(
            ["h5dump", "-d", "/entry/data/frames", "-s", "7,0,0", "-c", "1,1,8", "-A", "0", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH},
        )
        assert out.returncode == 0, out.stderr
        body = out.stdout.split("DATA {", 1)[1]
        values = [int(v) for v in body.split(":", 1)[1].split("}")[0].replace(",", " ").split()]
        assert values == frame(7)[0, :8].tolist()


def test_ledger_lists_exactly_the_dropped_ids(deployment: Deployment, feeder: StreamFeeder) -> None:
    dropped = {3, 17, 18, 44}
    rec = start_recorder(deployment)
    feeder.wait_for_subscribers()
    for k in range(60):
        if k in dropped:
            feeder.drop(k)
        else:
            feeder.send(k, frame(k))
        if k == 30:
            feeder.send_raw([b"{not json", b"x"])  # malformed: counted, never written
            # a duplicate of frame 30 (a re-sent message): counted, written once
            feeder.seq -= 1
            feeder.published.pop()
            feeder.send(30, frame(30))
    feeder.finish()
    assert rec.wait(60) == 1, rec.log()  # its file lacks frames: exit 1

    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        ids = f["entry/data/frame_id"][:].tolist()
        assert ids == [k for k in range(60) if k not in dropped]
        for row, fid in enumerate(ids):
            np.testing.assert_array_equal(f["entry/data/frames"][row], frame(fid))
        ledger = f["entry/ledger"]
        assert ledger["missing_ids"][:].tolist() == sorted(dropped)
        assert not bool(ledger.attrs["complete"])
        assert ledger.attrs["missing"] == len(dropped)
        assert ledger.attrs["dropped_upstream"] == len(dropped)
        assert ledger.attrs["rejected"] == 1
        assert ledger.attrs["duplicates"] == 1
        assert ledger.attrs["written"] == 60 - len(dropped)
        assert ledger.attrs["received"] == 60 - len(dropped) + 1
    summary = json.loads((deployment.dir / "rec.json").read_text())
    assert summary["missing"] == len(dropped) and summary["complete"] == 0

    shown = subprocess.run(
        [sys.executable, "-m", "framepipe", "inspect", str(deployment.data / "run_frames.h5"), "--png", "s.png"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        cwd=deployment.dir,
    )
    assert shown.returncode == 1, shown.stderr  # readable, but incomplete
    assert shown.stderr == "", shown.stderr
    assert re.search(r"missing ids\s+4: 3, 17-18, 44\n", shown.stdout), shown.stdout
    assert re.search(r"complete\s+false\n", shown.stdout), shown.stdout
    assert (deployment.dir / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("setting", "per_file"),
    [("recorders.0.rotate_frames=7", 7), (f"recorders.0.rotate_bytes={3 * H * W * 2}", 3)],
)
def test_rotation_loses_and_duplicates_nothing(
    deployment: Deployment, feeder: StreamFeeder, setting: str, per_file: int
) -> None:
    n = 30
    rec = start_recorder(
        deployment, setting, "recorders.0.compression=none", "recorders.0.path={data_dir}/{run}_{run_id}_{index:03d}.h5"
    )
    feeder.wait_for_subscribers()
    for k in range(n):
        feeder.send(k, frame(k))
    feeder.finish()
    assert rec.wait(60) == 0, rec.log()

    files = sorted(deployment.data.glob("run_*.h5"))
    assert len(files) == -(-n // per_file)
    seen: list[int] = []
    for index, path in enumerate(files):
        assert path.name.endswith(f"_{index:03d}.h5")
        with h5py.File(path, "r") as f:
            ids = f["entry/data/frame_id"][:].tolist()
            assert len(f["entry/data/frames"]) == len(ids) <= per_file
            assert f["entry"].attrs["file_index"] == index
            for row, fid in enumerate(ids):
                np.testing.assert_array_equal(f["entry/data/frames"][row], frame(fid))
            assert bool(f["entry/ledger"].attrs["complete"])
            assert json.loads(f["entry/ledger"].attrs["files"]) == [p.name for p in files]
            seen += ids
    assert seen == list(range(n)), "every frame exactly once across the series, in order"


def test_existing_file_is_never_overwritten(deployment: Deployment, feeder: StreamFeeder) -> None:
    deployment.data.mkdir(parents=True)
    existing = deployment.data / "run_frames.h5"
    existing.write_bytes(b"precious")
    rec = start_recorder(deployment)
    feeder.wait_for_subscribers()
    for k in range(5):
        feeder.send(k, frame(k))
    feeder.finish()
    assert rec.wait(60) == 0, rec.log()
    assert existing.read_bytes() == b"precious"
    assert "exists: writing run_frames-part2.h5 (never overwriting)" in rec.log()
    with h5py.File(deployment.data / "run_frames-part2.h5", "r") as f:
        assert f["entry/data/frame_id"][:].tolist() == list(range(5))


SWMR_READER = r"""
import sys, time
import h5py, hdf5plugin
path = sys.argv[1]
deadline = time.monotonic() + 60
while True:
    try:
        f = h5py.File(path, "r", swmr=True)
        break
    except OSError:
        assert time.monotonic() < deadline, "file never became readable in SWMR mode"
        time.sleep(0.02)  # sleep-ok: polling for the writer to enter SWMR mode
ids = f["entry/data/frame_id"]
frames = f["entry/data/frames"]
print("open", flush=True)
last = -1
while True:
    ids.refresh(); frames.refresh()
    n = min(len(ids), len(frames))
    if n != last:
        last = n
        top = int(ids[n - 1]) if n else -1
        total = int(frames[n - 1].astype("int64").sum()) if n else -1
        print(f"{n} {top} {total}", flush=True)
    time.sleep(0.02)  # sleep-ok: SWMR has no change notification; a reader polls
"""


def test_second_process_reads_new_frames_live_with_swmr(deployment: Deployment, feeder: StreamFeeder) -> None:
    rec = start_recorder(deployment)  # the default flush policy: 50 frames or 0.5 s
    feeder.wait_for_subscribers()
    path = deployment.data / "run_frames.h5"
    feeder.send(0, frame(0))
    reader = subprocess.Popen(
        [sys.executable, "-c", SWMR_READER, str(path)], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "open"
        latencies = []
        sent = 1
        for _batch in range(5):
            for _ in range(3):
                feeder.send(sent, frame(sent))
                sent += 1
            t0 = time.monotonic()
            while True:
                line = reader.stdout.readline()  # the reader prints on every change; bounded by the test timeout
                assert line, "reader exited"
                n, top, total = (int(v) for v in line.split())
                if n == sent:
                    break
            latencies.append(time.monotonic() - t0)
            assert top == sent - 1 and total == int(frame(top).astype(np.int64).sum()), "new frame content visible"
        # the issue asks for new frames within one second, with the default flush policy
        print("SWMR visibility latencies (s):", [round(t, 3) for t in latencies])
        assert max(latencies) < 1.0, latencies
    finally:
        reader.kill()
        reader.wait(10)
        if reader.stdout is not None:
            reader.stdout.close()
    feeder.finish()
    assert rec.wait(60) == 0, rec.log()


def test_kill_9_keeps_every_flushed_frame(deployment: Deployment, feeder: StreamFeeder) -> None:
    rec = start_recorder(deployment, "recorders.0.flush_frames=5", "recorders.0.flush_s=0")
    feeder.wait_for_subscribers()
    path = deployment.data / "run_frames.h5"
    for k in range(22):
        feeder.send(k, frame(k))

    # wait (bounded) until a SWMR reader sees the 20 frames flushed by the count policy
    def visible() -> int | None:
        try:
            with h5py.File(path, "r", swmr=True) as f:
                return n if (n := len(f["entry/data/frame_id"])) >= 20 else None
        except OSError:
            return None

    rec.wait_until(visible, "20 frames visible to a SWMR reader", 60)
    for k in range(22, 24):
        feeder.send(k, frame(k))
    rec.signal(signal.SIGKILL)
    rec.wait(10)

    # a crashed SWMR writer leaves the "open for writing" flag: h5py opens it with swmr=True
    with h5py.File(path, "r", swmr=True) as f:
        ids = f["entry/data/frame_id"][:].tolist()
        frames = f["entry/data/frames"]
        assert len(frames) == len(ids) == len(f["entry/data/t_acq_ns"]) >= 20
        assert ids == list(range(len(ids)))
        for row in range(len(ids)):
            np.testing.assert_array_equal(frames[row], frame(row))
        assert "ledger" not in f["entry"], "an unfinished recording has no ledger (never complete)"
    shown = subprocess.run(
        [sys.executable, "-m", "framepipe", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert shown.returncode == 1 and "NOT FINISHED" in shown.stdout and re.search(r"complete\s+false", shown.stdout)
    # ... and the replay camera plays it back, every complete row, exactly
    with ReplayCamera(CameraConfig(kind="replay", path=str(path), count=0)) as replay:
        played = list(iter(lambda: replay.grab(5.0), None))
    assert [p.frame_id for p in played] == ids
    for p in played:
        np.testing.assert_array_equal(p.array, frame(p.frame_id))
    if shutil.which("h5clear"):
        # HDF5's documented repair clears the flag; then any reader opens it normally
        subprocess.run(["h5clear", "-s", str(path)], check=True, timeout=60)
        with h5py.File(path, "r") as f:
            assert len(f["entry/data/frames"]) == len(f["entry/data/frame_id"]) >= 20


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("full-disk test needs root to mount a small tmpfs")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {out.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_stops_recorder_cleanly_while_stream_goes_on(
    deployment: Deployment, feeder: StreamFeeder, small_tmpfs: Path
) -> None:
    full = start_recorder(deployment, "recorders.0.compression=none", f"recorders.0.path={small_tmpfs}/full.h5")
    ok = start_recorder(deployment, "recorders.0.compression=none", name="rec-ok")
    feeder.wait_for_subscribers(2)
    n = 200  # 200 × 6 KiB = 1.2 MB: more than the 1 MiB disk
    for k in range(n):
        feeder.send(k, frame(k))
    feeder.finish(n_byes=2)
    assert full.wait(60) == 1, full.log()
    assert ok.wait(60) == 0, ok.log()
    log = full.log()
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in log.splitlines()), "every message is one line"
    summary = json.loads((deployment.dir / "rec.json").read_text())
    assert 0 < summary["written"] < n
    with h5py.File(deployment.data / "run_frames.h5", "r") as f:
        assert f["entry/data/frame_id"][:].tolist() == list(range(n)), "the other subscriber got everything"
    assert "full.h5: write failed at frame" in log and "No space left on device" in log
    assert "written" in log.splitlines()[-1], "the last line gives the counts"
    # the file on the full disk was closed: it opens, with frames and ids of equal length
    with h5py.File(small_tmpfs / "full.h5", "r") as f:
        written = len(f["entry/data/frame_id"])
        assert len(f["entry/data/frames"]) == written <= summary["written"]


def test_unwritable_directory_fails_before_the_run_with_one_line(deployment: Deployment) -> None:
    blocker = deployment.dir / "not-a-dir"
    blocker.write_text("a file where the data directory should be")  # root ignores permissions; this it cannot
    out = deployment.run_cli("record", "--name", "recorder-frames", "--set", f"recorders.0.path={blocker}/x/run.h5")
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cannot create" in errors[0] and "Not a directory" in errors[0], out.stderr
    assert "ready:" not in out.stderr, "nothing started"


def test_an_acquisition_stopped_before_its_first_frame_leaves_no_file(
    deployment: Deployment, feeder: StreamFeeder
) -> None:
    """Files open at an acquisition's start; one stopped before any frame came removes its
    empty file (a file exists for every acquisition that wrote frames, and only for those)."""
    rec = start_recorder(deployment)
    feeder.wait_for_subscribers()
    feeder.start(name="early")
    rec.wait_for("acquisition 1 'early': writing")
    (opened,) = deployment.data.glob("*.h5")
    rec.signal(signal.SIGTERM)  # the operator's Ctrl-C, as framepipe run forwards it
    deadline = time.monotonic() + 30
    while rec.poll() is None:  # answer its bye meanwhile (a bounded wait on it)
        assert time.monotonic() < deadline, rec.log()
        feeder._service(100)
    assert rec.returncode == 0, rec.log()
    assert not opened.exists() and list(deployment.data.glob("*.h5")) == []
    assert f"acquisition 1 stopped before its first frame: removed the empty {opened.name}" in rec.log()
    (bye,) = feeder.byes
    assert bye.written == 0 and bye.path is None


def compressible_or_noise(k: int) -> np.ndarray:
    """Every third frame is noise (barely compresses), the others a camera-like frame."""
    if k % 3 == 0:
        return np.random.default_rng(k).integers(0, 65535, (H, W), dtype=np.uint16, endpoint=True)
    return frame(k)


def _send_damaged(feeder: StreamFeeder, frame_id: int, payload: bytes, *, keep_length: bool = True) -> None:
    """Frame ``frame_id`` published with a damaged compressed payload (counted as published)."""
    from framepipe.wire.protocol import data_header, encode_data

    array = compressible_or_noise(frame_id)
    header = data_header(
        "frame", array, frame_id=frame_id, seq=feeder.seq, t_acq_ns=time.time_ns(), acquisition=feeder.acquisition
    )
    parts = encode_data(header, array, encoding="bitshuffle-lz4")
    head = json.loads(bytes(parts[0]))
    if keep_length:
        head["encoded_bytes"] = len(payload)
    feeder.send_raw([json.dumps(head).encode(), payload])
    feeder.seq += 1
    feeder.published.append(frame_id)


@pytest.mark.parametrize("compression", ["bitshuffle-lz4", "none", "gzip"])
def test_compressed_stream_stored_as_received_or_recoded(
    deployment: Deployment, feeder: StreamFeeder, compression: str
) -> None:
    """A publisher that compresses: a bitshuffle-LZ4 file stores each chunk as it came (the
    very chunk hdf5plugin makes for that frame); a raw or gzip file decodes and re-encodes.
    Lying payloads are rejected and counted and the run goes on; so is LZ4 data that does not
    decode where the recorder decodes."""
    from framepipe.core import bitshuffle

    rec = start_recorder(deployment, f"recorders.0.compression={compression}")
    feeder.wait_for_subscribers()
    damaged = {12: "lying"} if compression == "bitshuffle-lz4" else {12: "lying", 21: "corrupt"}
    for k in range(30):
        if k in damaged:
            chunk = bytearray(bitshuffle.encode(compressible_or_noise(k)).tobytes())
            if damaged[k] == "lying":
                chunk[:8] = (1 << 30).to_bytes(8, "big")  # says it decodes to 1 GB
            else:
                chunk[16:40] = bytes(24)  # the block table adds up, the LZ4 data is garbage
            _send_damaged(feeder, k, bytes(chunk))
        else:
            feeder.send(k, compressible_or_noise(k), encoding="bitshuffle-lz4")
    feeder.finish()
    assert rec.wait(60) == 1, rec.log()  # the damaged frames are missing: exit 1
    good = [k for k in range(30) if k not in damaged]

    summary = json.loads((deployment.dir / "rec.json").read_text())
    assert summary["rejected"] == len(damaged), summary
    kinds = {"lying": "bad_encoding", "corrupt": "corrupt_payload"}
    assert summary["rejected_by_kind"] == {kinds[v]: 1 for v in damaged.values()}, summary
    assert summary["wire_encoding"] == "bitshuffle-lz4"
    assert summary["wire_ratio"] > 1.0, summary
    assert summary.get("chunks_as_received", 0) == (len(good) if compression == "bitshuffle-lz4" else 0)

    reference = deployment.dir / "reference.h5"
    with h5py.File(deployment.data / "run_frames.h5", "r") as f, h5py.File(reference, "w") as ref:
        frames = f["entry/data/frames"]
        assert f["entry/data/frame_id"][:].tolist() == good
        for row, k in enumerate(good):
            np.testing.assert_array_equal(frames[row], compressible_or_noise(k))
        ledger = f["entry/ledger"]
        assert ledger["missing_ids"][:].tolist() == sorted(damaged) and ledger.attrs["rejected"] == len(damaged)
        assert ledger.attrs["wire_encoding"] == "bitshuffle-lz4" and ledger.attrs["wire_ratio"] > 1.0
        assert ledger.attrs["chunks_as_received"] == summary.get("chunks_as_received", 0)
        if compression == "bitshuffle-lz4":
            # the stored chunk is byte for byte the chunk HDF5's bitshuffle filter writes
            d = ref.create_dataset(
                "frames",
                shape=(len(good), H, W),
                dtype=np.uint16,
                chunks=(1, H, W),
                **hdf5plugin.Bitshuffle(cname="lz4"),
            )
            for row, k in enumerate(good):
                d[row] = compressible_or_noise(k)
            for row in range(len(good)):
                assert frames.id.read_direct_chunk((row, 0, 0)) == d.id.read_direct_chunk((row, 0, 0)), row
        else:
            assert str(hdf5plugin.BSHUF_ID) not in frames._filters
    shown = subprocess.run(
        [sys.executable, "-m", "framepipe", "inspect", str(deployment.data / "run_frames.h5")],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    as_received = len(good) if compression == "bitshuffle-lz4" else 0
    assert re.search(
        rf"on the wire\s+bitshuffle-lz4  ratio [\d.]+  \({as_received} chunks stored as received\)", shown.stdout
    ), shown.stdout
