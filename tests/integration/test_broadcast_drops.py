"""Drops on a broadcast stream are counted, never silent; lossless loses nothing.

A real recorder is made slow the bluntest way: SIGSTOP once publishing starts, SIGCONT
once the publisher has shown what it does about it (finished, in ``drop`` mode: it never
waits; or says it is waiting, in ``lossless`` mode). The file is then read with h5py.
"""

from __future__ import annotations

import signal

import h5py
import pytest

from framepipe.testing.deployment import Deployment, Proc
from framepipe.testing.streams import StreamWatcher, read_json

# chaos, SIGSTOP, restarts and fuzz through shared memory (the same-host default) and TCP
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_memory")]

N = 3000


def _start(dep: Deployment, policy: str) -> tuple[Proc, Proc]:
    dep.settings.update(
        {
            "camera.count": N,
            "camera.height": 64,
            "camera.width": 64,
            "publisher.subscribers": ["recorder-frames"],
            "publisher.policy": policy,
        }
    )
    dep.write_config()
    rec = dep.start(
        "recorder-frames", "record", "--name", "recorder-frames", "--summary-json", str(dep.dir / "rec.json")
    )
    rec.wait_for("ready:")
    pub = dep.start("publisher", "publisher", "--summary-json", str(dep.dir / "pub.json"))
    pub.wait_for("all subscribers here: publishing")  # its hello and its subscription arrived
    rec.signal(signal.SIGSTOP)  # a subscriber that stops reading, mid-stream
    return pub, rec


def _file(dep: Deployment) -> tuple[list[int], dict[str, object], list[int]]:
    with h5py.File(dep.data / "run_frames.h5", "r") as f:
        return (
            f["entry/data/frame_id"][:].tolist(),
            dict(f["entry/ledger"].attrs),
            f["entry/ledger/missing_ids"][:].tolist(),
        )


def test_drop_policy_gap_count_equals_frames_not_received(deployment: Deployment) -> None:
    pub, rec = _start(deployment, "drop")
    try:
        pub.wait_for(f"end of stream (complete) after {N} frames", timeout=60)  # it never waited for us
    finally:
        rec.signal(signal.SIGCONT)
    # an incomplete file makes the command that ran the acquisition exit 1 (DESIGN: exit codes)
    assert rec.wait(60) == 1, rec.log()[-3000:]
    assert pub.wait(60) == 0, pub.log()[-3000:]

    ids, ledger, missing_ids = _file(deployment)
    got = len(set(ids))
    assert got == len(ids), "no frame twice"
    gaps = int(ledger["dropped_upstream"])
    assert 0 < gaps, "the slow subscriber lost frames (else this test tests nothing)"
    assert gaps == N - got, "gap count == frames it did not get"
    assert int(ledger["missing"]) == gaps and not bool(ledger["complete"])
    assert sorted(missing_ids) == sorted(set(range(N)) - set(ids)), "the ledger names the missing frames"
    summary = read_json(deployment.dir / "rec.json")
    assert summary["gaps"] == gaps and summary["written"] == got
    assert read_json(deployment.dir / "pub.json")["published"] == N


def test_lossless_policy_slow_subscriber_gets_every_frame(deployment: Deployment) -> None:
    pub, rec = _start(deployment, "lossless")
    try:
        pub.wait_for("waiting for a slow subscriber (lossless)", timeout=60)
    finally:
        rec.signal(signal.SIGCONT)
    assert rec.wait(60) == 0, rec.log()[-3000:]
    assert pub.wait(60) == 0, pub.log()[-3000:]

    ids, ledger, missing_ids = _file(deployment)
    assert sorted(ids) == list(range(N)), "every frame, once"
    assert int(ledger["dropped_upstream"]) == 0 and int(ledger["missing"]) == 0 and missing_ids == []
    assert bool(ledger["complete"])
    pub_summary = read_json(deployment.dir / "pub.json")
    assert pub_summary["published"] == N and pub_summary["blocked_ms"] > 0, "the publisher waited for it"


def test_restarted_subscriber_rejoins_and_its_gap_is_in_its_counts_and_ledger(deployment: Deployment) -> None:
    n = 400
    deployment.settings.update(
        {
            "camera.count": n,
            "camera.fps": 100.0,
            "camera.height": 32,
            "camera.width": 32,
            "publisher.subscribers": ["recorder-frames"],
        }
    )
    deployment.write_config()
    first = deployment.start("rec1", "record", "--name", "recorder-frames")
    first.wait_for("ready:")
    pub = deployment.start("publisher", "publisher")
    watcher = StreamWatcher(f"tcp://127.0.0.1:{deployment.settings['publisher.frames_port']}")
    try:
        watcher.wait_distinct(100, timeout=60)
        first.signal(signal.SIGKILL)
        first.wait(10)
        second = deployment.start(
            "rec2",
            "record",
            "--name",
            "recorder-frames",
            "--set",
            "recorders.0.path={data_dir}/rejoined.h5",
            "--summary-json",
            str(deployment.dir / "rec2.json"),
        )
        assert second.wait(60) == 1, second.log()[-3000:]  # it lacks what it missed: exit 1
        assert pub.wait(60) == 0, pub.log()[-3000:]
    finally:
        watcher.close()

    with h5py.File(deployment.data / "rejoined.h5", "r") as f:
        ids = f["entry/data/frame_id"][:].tolist()
        ledger = dict(f["entry/ledger"].attrs)
        missing_ids = f["entry/ledger/missing_ids"][:].tolist()
    first_id = ids[0]
    assert first_id > 100 and ids == list(range(first_id, n)), "it rejoined and got the rest, in order"
    assert int(ledger["dropped_upstream"]) == first_id == n - len(ids), "the gap is counted"
    assert int(ledger["missing"]) == first_id and missing_ids == list(range(first_id)), "and named in the ledger"
    assert not bool(ledger["complete"])
    assert read_json(deployment.dir / "rec2.json")["gaps"] == first_id
