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

pytestmark = pytest.mark.integration


def generate(keys: Path, *clients: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "framepipe", "keys", "generate", str(keys)]
    for c in clients:
        argv += ["--client", c]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=child_env())


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    out = tmp_path / "keys"
    result = generate(out, "client", "operator")
    assert result.returncode == 0, result.stderr
    return out


def secure(deployment: Deployment, keys: Path, **settings: Any) -> None:
    deployment.settings.update({"security.key_dir": str(keys), **settings})
    deployment.write_config()


def test_keys_generate_layout_and_never_overwrites(tmp_path: Path, keys: Path) -> None:
    for name in ("server", "client", "operator"):
        public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
        assert secret is not None and len(public) == 40
        assert stat.S_IMODE((keys / f"{name}.key_secret").stat().st_mode) == 0o600
    allowed = sorted(p.name for p in (keys / "allowed_clients").iterdir())
    assert allowed == ["client.key", "operator.key"], "clients are allowed, the server key is not"
    again = generate(keys)
    assert again.returncode != 0
    assert "never overwrites" in again.stderr and len(again.stderr.strip().splitlines()) == 1


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
    good_public, good_secret = zmq.auth.load_certificate(keys / "client.key_secret")
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
        pub.wait_for(f"refused a CURVE client with unknown public key {rogue_public.decode()}", timeout=20)
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
    good_public, good_secret = zmq.auth.load_certificate(keys / "operator.key_secret")
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
