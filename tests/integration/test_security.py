"""CURVE on every socket: keys, an authorised run, an unauthorised and a plaintext client.

Real processes over tcp on loopback; the intruders are real zmq sockets in the test.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import pytest
import zmq
import zmq.auth

from framepipe.testing.deployment import Deployment, child_env
from framepipe.wire.messages import EndOfStreamRequest, ErrorReply
from framepipe.wire.protocol import decode, encode_control
from framepipe.wire.security import ROLES

pytestmark = pytest.mark.integration


def generate(keys: Path, *clients: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "framepipe", "keys", "generate", str(keys)]
    for c in clients:
        argv += ["--client", c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=child_env())


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    result = generate(out)  # one key pair per role
    assert result.returncode == 0, result.stderr
    return out


def secure(deployment: Deployment, keys: Path, **settings: Any) -> None:
    deployment.settings.update({"security.key_dir": str(keys), **settings})
    deployment.write_config()


def test_keys_generate_layout_and_never_overwrites(tmp_path: Path, keys: Path) -> None:
    for name in ("server", *ROLES):
        public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
        assert secret is not None and len(public) == 40
        assert stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode) == 0o600
    allowed = sorted(str(p.relative_to(keys / "allowed_clients")) for p in (keys / "allowed_clients").rglob("*.key"))
    assert allowed == sorted(f"{r}/{r}.key" for r in ROLES), "each role's key under its role, not the server's"
    again = generate(keys)
    assert again.returncode != 0
    assert "never overwrites" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_a_sink_without_its_own_key_refuses_to_start(deployment: Deployment, tmp_path: Path) -> None:
    """The sink reports each acquisition to the publisher as a client: without its key it
    would run and every acquisition would end "sink: no report"; it says so at start."""
    keys = tmp_path / "no-sink-key"
    assert generate(keys, "recorder", "worker", "ventilator", "publisher").returncode == 0
    secure(deployment, keys)
    sink = deployment.start("sink", "sink")
    assert sink.wait(30) == 2
    assert "sink.key_secret" in sink.log() and "Traceback" not in sink.log(), sink.log()


def test_acquire_with_a_key_the_control_endpoint_refuses_says_so_at_once(deployment: Deployment, keys: Path) -> None:
    """Another role's key, or no key where CURVE is on: the handshake is refused, and the
    operator reads that in one line at once (not "no answer" after the whole timeout)."""
    secure(deployment, keys, **{"run.serve": True})
    publisher = deployment.start("publisher", "publisher")
    publisher.wait_for("ready:", 30)
    as_worker = deployment.run_cli(
        "acquire", "--frames", "5", env={"FRAMEPIPE_SECURITY__CLIENT_SECRET_KEY": str(keys / "worker.key_secret")}
    )
    assert as_worker.returncode == 1, as_worker.stderr
    assert "refused this client's key" in as_worker.stderr and "worker.key_secret" in as_worker.stderr
    assert len(as_worker.stderr.strip().splitlines()) == 1
    publisher.wait_for("(role worker, key worker) on acquisition-control", 10)
    plain = deployment.run_cli("acquire", "--frames", "5", "--set", "security.key_dir=")
    assert plain.returncode == 1 and "CURVE is on there" in plain.stderr, plain.stderr
    assert not any(deployment.data.glob("*.h5"))


def test_authorised_run_completes_with_every_frame(deployment: Deployment, keys: Path) -> None:
    n = 200
    secure(deployment, keys, **{"camera.count": n, "camera.height": 48, "camera.width": 64})
    sink = deployment.start("sink", "sink")
    sink.wait_for("ready:")
    workers = [deployment.start(f"w{i}", "worker", "--index", str(i)) for i in range(2)]
    recs = [deployment.start(r, "record", "--name", r) for r in ("recorder-frames", "recorder-results")]
    vent = deployment.start("ventilator", "ventilator")
    pub = deployment.start("publisher", "publisher")
    for proc in [pub, vent, sink, *workers, *recs]:
        assert proc.wait(120) == 0, f"{proc.name}:\n{proc.log()[-3000:]}"
        assert "refused" not in proc.log()
    for stream in ("frames", "results"):
        with h5py.File(deployment.data / f"run_{stream}.h5", "r") as f:
            assert sorted(f["entry/data/frame_id"][:].tolist()) == list(range(n))
            assert bool(f["entry/ledger"].attrs["complete"])


@pytest.fixture
def live_publisher(deployment: Deployment, keys: Path) -> Deployment:
    """A CURVE publisher streaming (drop policy, paced) to one authorised recorder."""
    secure(
        deployment,
        keys,
        **{
            "camera.count": 0,
            "camera.fps": 50.0,
            "camera.height": 16,
            "camera.width": 16,
            "publisher.policy": "drop",
            "publisher.subscribers": ["recorder-frames"],
        },
    )
    pub = deployment.start("publisher", "publisher")
    pub.wait_for("ready:")
    deployment.start("recorder-frames", "record", "--name", "recorder-frames")
    pub.wait_for("all subscribers here")
    return deployment


def _url(dep: Deployment, key: str) -> str:
    return f"tcp://127.0.0.1:{dep.settings[f'publisher.{key}']}"


def _subscriber(ctx: zmq.Context[Any], url: str, keys: tuple[bytes, bytes, bytes] | None) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(url)
    return sock


def _hello(ctx: zmq.Context[Any], url: str, keys: tuple[bytes, bytes, bytes] | None) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = keys
    sock.connect(url)
    sock.send(json.dumps({"v": 1, "kind": "hello", "name": "intruder"}).encode())
    return sock


def _stop(dep: Deployment) -> None:
    for proc in dep.procs:
        proc.signal(2)
    for proc in dep.procs:
        assert proc.wait(60) == 0, f"{proc.name}:\n{proc.log()[-2000:]}"
    with h5py.File(dep.data / "run_frames.h5", "r") as f:
        assert f["entry/data/frame_id"].shape[0] > 0, "the authorised recorder kept recording"


def test_unauthorised_client_gets_nothing_and_is_logged(live_publisher: Deployment, keys: Path) -> None:
    dep = live_publisher
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    good_public, good_secret = zmq.auth.load_certificate(keys / "recorder.key_secret")
    assert good_secret is not None
    rogue_public, rogue_secret = zmq.curve_keypair()  # a valid key pair nobody allowed
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        good = _subscriber(ctx, _url(dep, "frames_port"), (good_public, good_secret, server_public))
        rogue = _subscriber(ctx, _url(dep, "frames_port"), (rogue_public, rogue_secret, server_public))
        rogue_req = _hello(ctx, _url(dep, "sync_port"), (rogue_public, rogue_secret, server_public))
        # positive control: with the right key, frames arrive
        assert good.poll(20_000), "an authorised subscriber received nothing"
        pub = dep.procs[0]
        pub.wait_for(f"auth: refused key {rogue_public.decode()[:12]}… (unknown key", timeout=20)
        # the denial is logged; and meanwhile (the authorised one receiving) the rogue got nothing
        for _ in range(20):
            assert good.poll(5_000)
            good.recv_multipart()
        assert not rogue.poll(0), "an unauthorised subscriber received a frame"
        assert not rogue_req.poll(0), "an unauthorised sync request was answered"
    finally:
        ctx.destroy(linger=0)
    _stop(dep)


def test_plaintext_client_cannot_talk_to_a_curve_server(live_publisher: Deployment, keys: Path) -> None:
    dep = live_publisher
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    good_public, good_secret = zmq.auth.load_certificate(keys / "recorder.key_secret")
    assert good_secret is not None
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        plain = _subscriber(ctx, _url(dep, "frames_port"), None)
        plain_req = _hello(ctx, _url(dep, "sync_port"), None)
        good = _subscriber(ctx, _url(dep, "frames_port"), (good_public, good_secret, server_public))
        assert good.poll(20_000), "an authorised subscriber received nothing"
        for _ in range(20):  # ~0.4 s of stream at 50 fps reached the authorised client...
            assert good.poll(5_000)
            good.recv_multipart()
        assert not plain.poll(0), "a plaintext subscriber received a frame"  # ...and none the plain one
        assert not plain_req.poll(0), "a plaintext sync request was answered"
    finally:
        ctx.destroy(linger=0)
    _stop(dep)


def test_binding_all_interfaces_without_keys_warns(deployment: Deployment, keys: Path) -> None:
    deployment.settings.update({"publisher.bind": "*", "publisher.subscribers": ["nobody"]})
    deployment.write_config()
    plain = deployment.start("plain", "publisher")
    out = plain.wait_for("ready:")
    assert "without CURVE keys" in out and "anyone on this network" in out
    plain.signal(2)
    plain.wait(30)

    secure(deployment, keys)
    curve = deployment.start("curve", "publisher")
    out = curve.wait_for("ready:")
    assert "without CURVE keys" not in out
    curve.signal(2)
    curve.wait(30)


# ---------------------------------------------------------------------------- roles


def _sink_url(dep: Deployment, key: str, source: str = "") -> str:
    return f"tcp://{source + ';' if source else ''}127.0.0.1:{dep.settings[f'sink.{key}']}"


def _forged_eos(ctx: zmq.Context[Any], url: str, key: Path | None, server: Path | None) -> zmq.Socket[Any]:
    """A REQ that says it is the ventilator and that the stream is over, with no frames."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    if key is not None and server is not None:
        public, secret = zmq.auth.load_certificate(key)
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = zmq.auth.load_certificate(server)[0]
    sock.connect(url)
    sock.send_multipart(encode_control(EndOfStreamRequest(name="ventilator", frame_ids=[])))
    return sock


def _refusal(sock: zmq.Socket[Any]) -> str:
    assert sock.poll(20_000), "the forged end of stream got no answer"
    reply = decode(sock.recv_multipart(), max_payload_bytes=0).control
    assert isinstance(reply, ErrorReply), f"the forged end of stream was accepted: {reply}"
    return reply.reason


def _run_completes(dep: Deployment, sink: Any, n: int) -> dict[str, Any]:
    """Start the rest of the pipeline after ``sink``; every process ends well, every frame is in."""
    procs = [dep.start("worker-0", "worker", "--index", "0")]
    procs += [dep.start(name, "record", "--name", name) for name in ("recorder-frames", "recorder-results")]
    procs += [dep.start("ventilator", "ventilator"), dep.start("publisher", "publisher")]
    for proc in [sink, *procs]:
        assert proc.wait(120) == 0, f"{proc.name}:\n{proc.log()[-3000:]}"
    with h5py.File(dep.data / "run_results.h5", "r") as f:
        assert sorted(f["entry/data/frame_id"][:].tolist()) == list(range(n)), "the run was cut short"
        assert bool(f["entry/ledger"].attrs["complete"])
    return dict(json.loads((dep.dir / "sink.json").read_text()))


def test_curve_roles_a_worker_key_cannot_end_the_stream_nor_a_recorder_send_results(
    deployment: Deployment, keys: Path
) -> None:
    n = 150
    secure(deployment, keys, **{"camera.count": n, "camera.fps": 100.0, "camera.height": 32, "camera.width": 32})
    sink = deployment.start("sink", "sink", "--summary-json", str(deployment.dir / "sink.json"))
    sink.wait_for("ready:")
    server = keys / "server.key"
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        # a worker's key is not admitted on results-sync at all: refused at the handshake
        as_worker = _forged_eos(ctx, _sink_url(deployment, "sync_port"), keys / "worker.key_secret", server)
        sink.wait_for("(role worker, key worker) on results-sync", timeout=20)
        # a recorder's key is (it says hello there), but its end of stream is refused
        as_recorder = _forged_eos(ctx, _sink_url(deployment, "sync_port"), keys / "recorder.key_secret", server)
        reason = _refusal(as_recorder)
        assert "end_of_stream refused from key recorder (role recorder)" in reason
        assert not as_worker.poll(0), "the worker key's request was answered"
        # a recorder's key cannot connect to results-in
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        public, secret = zmq.auth.load_certificate(keys / "recorder.key_secret")
        push.curve_publickey, push.curve_secretkey = public, secret
        push.curve_serverkey = zmq.auth.load_certificate(server)[0]
        push.connect(_sink_url(deployment, "results_in_port"))
        sink.wait_for("(role recorder, key recorder) on results-in", timeout=20)
    finally:
        ctx.destroy(linger=0)
    log = sink.log()
    assert "refused from key recorder (role recorder)" in log and "it said it was 'ventilator'" in log
    summary = _run_completes(deployment, sink, n)
    assert summary["rejected_by_kind"].get("forbidden") == 1, summary["rejected_by_kind"]
    assert summary["auth_denied"] >= 2
    assert summary["received"] == n


def test_without_curve_an_end_of_stream_from_another_address_is_refused(deployment: Deployment) -> None:
    n = 100
    camera = {"camera.count": n, "camera.fps": 100.0, "camera.height": 32, "camera.width": 32}
    deployment.settings.update({**camera, "ventilator.host": "127.0.0.1"})
    deployment.write_config()
    sink = deployment.start("sink", "sink", "--summary-json", str(deployment.dir / "sink.json"))
    sink.wait_for("ready:")
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        # loopback too, but not the ventilator's address: libzmq's "source;destination" syntax
        forged = _forged_eos(ctx, _sink_url(deployment, "sync_port", source="127.0.0.2:0"), None, None)
        reason = _refusal(forged)
        assert "end_of_stream refused from 127.0.0.2: not ventilator.host (127.0.0.1)" in reason
    finally:
        ctx.destroy(linger=0)
    summary = _run_completes(deployment, sink, n)
    assert summary["rejected_by_kind"].get("forbidden") == 1, summary["rejected_by_kind"]
