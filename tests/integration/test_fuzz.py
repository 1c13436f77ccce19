"""Hostile input: 10,000 malformed multipart messages to every bound socket that reads.

During a valid run (publisher → ventilator → 2 workers → sink → 2 recorders) the test
floods, one after the other, the publisher's sync ROUTER, the sink's sync ROUTER and the
sink's results-in PULL with seeded random and mutated messages, every one of them
invalid. Then it checks, from the components' --summary-json, that nothing crashed, that
each bad message was counted as rejected on the socket it came in on, and, from the HDF5
files, that the run still delivered every frame exactly once.

A second run, with ``limits.max_message_mb = 1``, sends the messages that once killed or
exhausted a process (issue 18): 10 KB headers nested 5000 deep, NaN and Infinity, and
message parts over the limit, to the same sockets and to the status endpoints. The deep
and non-standard ones must be counted as ``bad_header`` rejects; the oversized ones must
cost the sender its connection before anything is buffered (``ZMQ_MAXMSGSIZE``).

Not fuzzed: the XPUB stream ports (what a peer sends there are subscriptions, and a
subscriber that never reads holds a ``lossless`` stream by design), the tasks PUSH and
the control PUB (they never read data), and the connecting sides (workers, subscribers).
"""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Iterator
from typing import Any

import h5py
import pytest
import zmq

from framepipe.testing.deployment import Deployment, free_ports
from framepipe.testing.streams import StreamWatcher, read_json

# chaos, SIGSTOP, restarts and fuzz through shared memory (the same-host default) and TCP
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("shared_memory")]

PER_SOCKET = 10_000


def _j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _valid_result_header(rng: random.Random) -> dict[str, Any]:
    return {
        "v": 1,
        "kind": "result",
        "frame_id": rng.randrange(100),
        "seq": 0,
        "t_acq_ns": 1,
        "outputs": [{"name": "spectrum", "dtype": "float32", "shape": [4, 3]}],
        "worker": "fuzz",
    }


def bad_messages(rng: random.Random, *, sync: bool) -> Iterator[list[bytes]]:
    """An endless supply of invalid messages, each broken in at least one validated way."""
    while True:
        r = rng.randrange(16)
        if r == 0:  # raw garbage, 1..4 frames
            parts = [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 5))]
        elif r == 1:  # not UTF-8 / not JSON
            parts = [b"\xff\xfe" + rng.randbytes(8)]
        elif r == 2:  # JSON, not an object
            parts = [rng.choice([b"[1,2,3]", b"42", b'"hello"', b"null", b"NaN", b"{"])]
        elif r == 3:  # wrong or missing version
            parts = [_j({"v": rng.choice([0, 2, "1", None, 1.0, True]), "kind": "hello", "name": "x"})]
        elif r == 4:  # unknown kind
            parts = [_j({"v": 1, "kind": rng.choice(["", "pickle", "exec", 7]), "name": "x"})]
        elif r == 5:  # control message with a payload
            parts = [_j({"v": 1, "kind": rng.choice(["hello", "heartbeat", "eos"]), "name": "x"}), b"payload"]
        elif r == 6:  # too many frames
            parts = [_j({"v": 1, "kind": "hello", "name": "x"})] * rng.randrange(3, 40)
        elif r == 7:  # oversized header
            parts = [b'{"v":1,"pad":"' + b"a" * 70_000 + b'"}']
        elif sync:
            if r in (8, 9):  # a sync request without a usable name
                parts = [_j({"v": 1, "kind": rng.choice(["hello", "bye", "eos"]), "name": rng.choice(["", 3, None])})]
            elif r in (10, 11):  # a request kind the sync port does not take
                parts = [_j({"v": 1, "kind": rng.choice(["ack", "stop", "heartbeat", "status", "done"]), "name": "fz"})]
            elif r in (12, 13):  # data on a sync port
                h = _valid_result_header(rng)
                parts = [_j(h), bytes(48)]
            else:  # end of stream from someone other than the ventilator, or bad ids
                name = rng.choice(["fuzz", "ventilator"])
                ids: Any = [[5, 1]] if name == "ventilator" else [[0, 3]]
                parts = [_j({"v": 1, "kind": "eos", "name": name, "frame_ids": ids})]
        else:
            h = _valid_result_header(rng)
            payload = bytes(48)
            if r == 8:
                h.pop(rng.choice(["frame_id", "seq", "t_acq_ns", "outputs"]))
            elif r == 9:
                h[rng.choice(["frame_id", "seq", "t_acq_ns"])] = rng.choice([-1, 1 << 64, "7", 1.5, True, [1]])
            elif r == 10:
                h["outputs"][0]["dtype"] = rng.choice(["object", "float16", "<U4", "int8", "O", 7])
            elif r == 11:
                shapes = [[0, 3], [-4, 3], [1, 1, 1, 1], [1 << 20, 1 << 20], ["4", 3], [True, 3], "4x3", None]
                h["outputs"][0]["shape"] = rng.choice(shapes)
            elif r == 12:
                payload = bytes(rng.choice([0, 47, 49, 4096]))  # length ≠ shape × itemsize
            elif r == 13:
                h["kind"] = rng.choice(["ack", "stop", "hello", "bye"])  # a control kind on the data socket
                h = {"v": 1, "kind": h["kind"]}
                payload = b""
                parts = [_j(h)]
                yield parts
                continue
            elif r == 14:
                parts = [_j({"v": 1, "kind": "heartbeat", "name": rng.choice(["", 5, None, ["w"]])})]
                yield parts
                continue
            else:
                parts = [_j(h)]  # data without its payload
                yield parts
                continue
            parts = [_j(h), payload]
        yield parts


def _flood_router(url: str, name: str, seed: int) -> None:
    """10,000 bad requests (with and without the REQ envelope), then on the same
    connection a hello/bye probe whose replies prove every earlier message was handled."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 0)  # keep every error reply: the probe's must not be dropped
    sock.connect(url)
    gen = bad_messages(random.Random(seed), sync=True)
    try:
        for i in range(PER_SOCKET):
            parts = next(gen)
            sock.send_multipart(parts if i % 5 == 0 else [b"", *parts])
        for kind, answer in (("hello", "welcome"), ("bye", "done")):
            sock.send_multipart([b"", _j({"v": 1, "kind": kind, "name": name})])
            while True:
                assert sock.poll(60_000), f"{url} stopped answering after the flood"
                reply = json.loads(sock.recv_multipart()[-1])
                if reply.get("kind") == answer:
                    break
                assert reply.get("ok") is False, reply  # every junk request got an error, if any reply
    finally:
        sock.close(linger=0)
        ctx.term()


def _flood_pull(url: str, seed: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(url)
    gen = bad_messages(random.Random(seed), sync=False)
    try:
        for _ in range(PER_SOCKET):
            sock.send_multipart(next(gen))
        # the probe: a heartbeat, named, last on this connection
        sock.send_multipart([_j({"v": 1, "kind": "heartbeat", "name": "fuzz-probe"})])
    finally:
        sock.close()  # linger: flushed to the sink before we go on
        ctx.term()


def test_fuzz_every_bound_socket_during_a_valid_run(deployment: Deployment) -> None:
    deployment.settings.update({"camera.count": 0, "camera.fps": 40.0, "camera.height": 32, "camera.width": 32})
    deployment.write_config()
    d = deployment.dir
    sink = deployment.start("sink", "sink", "--summary-json", str(d / "sink.json"))
    sink.wait_for("ready:")
    workers = [deployment.start(f"w{i}", "worker", "--index", str(i)) for i in range(2)]
    recs = [
        deployment.start(n, "record", "--name", n, "--summary-json", str(d / f"{n}.json"))
        for n in ("recorder-frames", "recorder-results")
    ]
    vent = deployment.start("ventilator", "ventilator", "--summary-json", str(d / "ventilator.json"))
    pub = deployment.start("publisher", "publisher", "--summary-json", str(d / "publisher.json"))
    watcher = StreamWatcher(f"tcp://127.0.0.1:{deployment.settings['sink.results_port']}")
    try:
        watcher.wait_distinct(10, timeout=60)
        port = deployment.settings
        _flood_router(f"tcp://127.0.0.1:{port['publisher.sync_port']}", "fuzz-probe", seed=1)
        _flood_router(f"tcp://127.0.0.1:{port['sink.sync_port']}", "fuzz-probe", seed=2)
        _flood_pull(f"tcp://127.0.0.1:{port['sink.results_in_port']}", seed=3)
        sink.wait_for("worker fuzz-probe joined", timeout=60)  # everything before it was read
        at = len(watcher.ids)
        watcher.wait_distinct(at + 10, timeout=60)  # and the run is still going
        pub.signal(signal.SIGINT)  # end the run: the pipeline drains
        for proc in (pub, vent, sink, *recs, *workers):
            assert proc.wait(60) == 0, f"{proc.name} failed:\n{proc.log()[-3000:]}"
    finally:
        watcher.close()

    pub_s, sink_s = read_json(d / "publisher.json"), read_json(d / "sink.json")
    assert pub_s["rejected_by_socket"] == {"frames-sync": PER_SOCKET}, pub_s
    assert sink_s["rejected_by_socket"] == {"results-sync": PER_SOCKET, "results-in": PER_SOCKET}, sink_s
    assert pub_s["rejected"] == PER_SOCKET and sink_s["rejected"] == 2 * PER_SOCKET
    published = pub_s["published"]
    assert sink_s["received"] == published and sink_s["missing"] == 0
    for stream in ("frames", "results"):
        with h5py.File(deployment.data / f"run_{stream}.h5", "r") as f:
            ids = f["entry/data/frame_id"][:].tolist()
            assert sorted(ids) == list(range(published)), f"{stream}: every frame exactly once"
            assert bool(f["entry/ledger"].attrs["complete"])
    # the noise was logged rate-limited, not line per message
    assert sink.log().count("rejected message") < 200


# ---------------------------------------------------------------- one message, issue 18

DEEP = b"[" * 5000 + b"]" * 5000  # 10 KB: json.loads alone raises RecursionError


def hostile_headers(kind: str, **fields: Any) -> list[bytes]:
    """Headers that are each one bad_header reject: nested too deep, or numbers JSON has not."""
    base = _j({"v": 1, "kind": kind, **fields})[:-1]  # without its closing brace
    return [
        DEEP,
        b"[" * 10_000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        base + b',"x":' + DEEP + b"}",
        base + b',"gain":NaN}',
        base + b',"gain":-Infinity}',
        base + b',"gain":1e999}',
    ]


def _disconnects(url: str, kind: int, frames: list[bytes]) -> bool:
    """Send one message too large for the receiver; True when it drops the connection."""
    ctx = zmq.Context()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        sock.connect(url)
        sock.send_multipart(frames)
        return bool(monitor.poll(10_000))
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
        ctx.term()


def _ask(ctx: zmq.Context[Any], url: str, message: bytes) -> dict[str, Any]:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        sock.send(message)
        assert sock.poll(30_000), f"{url} did not answer {message[:50]!r}"
        reply: dict[str, Any] = json.loads(sock.recv())
        return reply
    finally:
        sock.close(0)


def _ask_each(url: str, messages: list[bytes], probe: dict[str, Any], answer: str) -> None:
    """Each message on a fresh REQ, each refused with an error reply; then the probe, answered."""
    ctx = zmq.Context()
    try:
        for message in messages:
            reply = _ask(ctx, url, message)
            assert reply["kind"] == "error", (message[:50], reply)
        assert _ask(ctx, url, _j(probe))["kind"] == answer
    finally:
        ctx.term()


def test_one_message_cannot_crash_or_exhaust_a_process(deployment: Deployment) -> None:
    status_ports = free_ports(2)
    deployment.settings.update(
        {
            "camera.count": 0,
            "camera.fps": 40.0,
            "camera.height": 32,
            "camera.width": 32,
            "limits.max_message_mb": 1,
            "publisher.status_port": status_ports[0],
            "sink.status_port": status_ports[1],
        }
    )
    deployment.write_config()
    d, port = deployment.dir, deployment.settings
    sink = deployment.start("sink", "sink", "--summary-json", str(d / "sink.json"))
    sink.wait_for("ready:")
    workers = [deployment.start(f"w{i}", "worker", "--index", str(i)) for i in range(2)]
    recs = [
        deployment.start(n, "record", "--name", n, "--summary-json", str(d / f"{n}.json"))
        for n in ("recorder-frames", "recorder-results")
    ]
    vent = deployment.start("ventilator", "ventilator", "--summary-json", str(d / "ventilator.json"))
    pub = deployment.start("publisher", "publisher", "--summary-json", str(d / "publisher.json"))
    watcher = StreamWatcher(f"tcp://127.0.0.1:{port['sink.results_port']}")
    url = {
        "frames-sync": f"tcp://127.0.0.1:{port['publisher.sync_port']}",
        "results-sync": f"tcp://127.0.0.1:{port['sink.sync_port']}",
        "results-in": f"tcp://127.0.0.1:{port['sink.results_in_port']}",
        "publisher-status": f"tcp://127.0.0.1:{status_ports[0]}",
        "sink-status": f"tcp://127.0.0.1:{status_ports[1]}",
    }
    sync_bad = hostile_headers("hello", name="fuzz")
    status_bad = hostile_headers("status", cmd="status")
    spectrum = [{"name": "spectrum", "dtype": "float32", "shape": [4, 3]}]
    result_bad = hostile_headers("result", frame_id=1, seq=0, t_acq_ns=1, outputs=spectrum)
    over = bytes(1_000_001)  # one byte over limits.max_message_mb
    try:
        watcher.wait_distinct(10, timeout=60)
        # too large: the sender is cut off before the message is buffered
        assert _disconnects(url["frames-sync"], zmq.DEALER, [b"", over]), "frames-sync took 1 MB + 1"
        assert _disconnects(url["results-sync"], zmq.DEALER, [b"", over]), "results-sync took 1 MB + 1"
        big = _j(
            {
                **_valid_result_header(random.Random(0)),
                "outputs": [{"name": "s", "dtype": "float32", "shape": [250, 1001]}],
            }
        )
        assert _disconnects(url["results-in"], zmq.PUSH, [big, over]), "results-in took 1 MB + 1"
        for name in ("publisher-status", "sink-status"):  # a request is one header: 64 KiB
            assert _disconnects(url[name], zmq.DEALER, [b"", bytes(70_000)]), f"{name} took 70 KB"
        # too deep, or not JSON numbers: each refused, and the socket answers on
        _ask_each(url["frames-sync"], sync_bad, {"v": 1, "kind": "hello", "name": "fuzz-probe"}, "welcome")
        _ask_each(url["results-sync"], sync_bad, {"v": 1, "kind": "bye", "name": "fuzz-probe"}, "done")
        for name in ("publisher-status", "sink-status"):
            _ask_each(url[name], status_bad, {"v": 1, "kind": "status", "cmd": "status"}, "status")
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 5000)
        push.connect(url["results-in"])
        for header in result_bad:
            push.send_multipart([header, bytes(48)])
        push.send_multipart([_j({"v": 1, "kind": "heartbeat", "name": "fuzz-probe"})])
        push.close()  # linger: flushed before we go on
        ctx.term()
        sink.wait_for("worker fuzz-probe joined", timeout=60)  # everything before it was read
        at = len(watcher.ids)
        watcher.wait_distinct(at + 10, timeout=60)  # and the run is still going
        for proc in (pub, vent, sink, *recs, *workers):
            assert proc.poll() is None, f"{proc.name} died:\n{proc.log()[-3000:]}"
        pub.signal(signal.SIGINT)  # end the run: the pipeline drains
        for proc in (pub, vent, sink, *recs, *workers):
            assert proc.wait(60) == 0, f"{proc.name} failed:\n{proc.log()[-3000:]}"
    finally:
        watcher.close()

    pub_s, sink_s = read_json(d / "publisher.json"), read_json(d / "sink.json")
    n = len(sync_bad)
    assert pub_s["rejected_by_socket"] == {"frames-sync": n, "status": n}, pub_s
    assert sink_s["rejected_by_socket"] == {"results-sync": n, "results-in": n, "status": n}, sink_s
    assert pub_s["rejected_by_kind"] == {"bad_header": 2 * n}
    assert sink_s["rejected_by_kind"] == {"bad_header": 3 * n}
    published = pub_s["published"]
    assert sink_s["received"] == published and sink_s["missing"] == 0
    for stream in ("frames", "results"):
        with h5py.File(deployment.data / f"run_{stream}.h5", "r") as f:
            ids = f["entry/data/frame_id"][:].tolist()
            assert sorted(ids) == list(range(published)), f"{stream}: every frame exactly once"
            assert bool(f["entry/ledger"].attrs["complete"])
