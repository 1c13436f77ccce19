"""Four LAN machines as Linux network namespaces, running configs/lan.toml with CURVE on.

::

    ns A 10.77.0.1  publisher, ventilator, recorder-frames ─┐
    ns B 10.77.0.2  worker                                  ├─ veth ─ br0 (in its own ns "sw")
    ns C 10.77.0.3  worker                                  │
    ns D 10.77.0.4  sink, recorder-results                 ─┘

Everything lives in namespaces this test creates (the bridge too, so the host's own
network is never touched) and they are deleted in ``finally``. The components are the
real CLI, started with ``ip netns exec``, from a copy of configs/lan.toml whose example
addresses are replaced by the namespace addresses. Needs root and ``ip netns``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from framepipe.testing.deployment import Proc, child_env

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
HOSTS = {"A": "10.77.0.1", "B": "10.77.0.2", "C": "10.77.0.3", "D": "10.77.0.4"}
# the example addresses of configs/lan.toml, and the namespace each one becomes
EXAMPLE = {"192.168.50.11": "A", "192.168.50.14": "D"}
H, W = 48, 64


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    probe = f"fpprobe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return f"`ip netns add` fails here: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return None


class Lan:
    """Namespaces A-D joined by a bridge in a fifth namespace; removed by ``close()``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        tag = f"fp{os.getpid() % 100000}"
        self.ns = {h: f"{tag}{h}" for h in HOSTS}
        self.switch = f"{tag}sw"
        self.procs: list[Proc] = []

    def up(self) -> None:
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host, addr in HOSTS.items():
            ns = self.ns[host]
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # the veth pair is born inside the namespaces: nothing appears on the host
            peer = ("peer", "name", f"port{host}", "netns", self.switch)
            _run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", *peer)
            _run("ip", "-n", self.switch, "link", "set", f"port{host}", "master", "br0", "up")
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
        for ns in (*self.ns.values(), self.switch):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def start(self, host: str, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(
            name,
            ["ip", "netns", "exec", self.ns[host], sys.executable, "-m", "framepipe", *argv],
            self.tmp / f"{name}.log",
            child_env(env),
            self.tmp,
        )
        self.procs.append(proc)
        return proc

    def exec(self, host: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns[host], *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(env),
        )


#: what each machine holds, as docs/deploy.md tells operators to place keys: the servers'
#: public key everywhere; the servers' secret and the allowed keys where something binds;
#: each role's (each worker host's) own client secret, on its machine only
PLACEMENT = {
    "A": ["server.key", "server.key_secret", "allowed_clients"]
    + [f"{role}.key_secret" for role in ("publisher", "ventilator", "recorder", "operator")],
    "B": ["server.key", "hostB.key_secret"],
    "C": ["server.key", "hostC.key_secret"],
    "D": ["server.key", "server.key_secret", "allowed_clients", "recorder.key_secret"],
}
#: worker hosts use their own key (FRAMEPIPE_SECURITY__CLIENT_SECRET_KEY); the others their role's default
OWN_KEY = {"B": "hostB.key_secret", "C": "hostC.key_secret"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key directory per host (``keys/A`` ...), holding only what that host needs."""
    base = tmp_path_factory.mktemp("lan-keys")
    made = base / "generated"
    argv = [sys.executable, "-m", "framepipe", "keys", "generate", str(made)]
    for client in ("publisher", "ventilator", "recorder", "operator", "worker:hostB", "worker:hostC"):
        argv += ["--client", client]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=child_env())
    assert result.returncode == 0, result.stderr
    for host, files in PLACEMENT.items():
        (base / "keys" / host).mkdir(parents=True)
        for name in files:
            if (made / name).is_dir():
                shutil.copytree(made / name, base / "keys" / host / name)
            else:
                shutil.copy2(made / name, base / "keys" / host / name)
    shutil.rmtree(made)  # no process can fall back on the full set
    return base / "keys"


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[Lan]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    net = Lan(tmp_path)
    try:
        net.up()
        yield net
    finally:
        net.close()


class Run:
    """One deployment of the test copy of configs/lan.toml on the namespace hosts."""

    def __init__(self, lan: Lan, keys: Path, n: int, **settings: Any):
        self.lan = lan
        self.n = n
        self.data = lan.tmp / "data"
        text = (REPO / "configs" / "lan.toml").read_text()
        for example, host in EXAMPLE.items():
            text = text.replace(example, HOSTS[host])
        self.config = lan.tmp / "lan.toml"
        self.config.write_text(text)
        self.keys = keys
        self.sets = {
            "run.data_dir": str(self.data),
            "run.finish_timeout_s": 90,
            "camera.count": n,
            "camera.height": H,
            "camera.width": W,
            "camera.seed": 3,
            **settings,
        }
        self.procs: dict[str, Proc] = {}

    def argv(self, host: str, *args: str) -> list[str]:
        out = [*args, "--config", str(self.config)]
        for key, value in {**self.sets, "security.key_dir": str(self.keys / host)}.items():
            out += ["--set", f"{key}={value}"]
        return out

    def env(self, host: str) -> dict[str, str]:
        own = OWN_KEY.get(host)
        return {"FRAMEPIPE_SECURITY__CLIENT_SECRET_KEY": str(self.keys / host / own)} if own else {}

    def start(self, host: str, name: str, *args: str) -> Proc:
        proc = self.lan.start(host, name, self.argv(host, *args), self.env(host))
        self.procs[name] = proc
        return proc

    def start_all(self) -> None:
        self.start("D", "sink", "sink", "--summary-json", str(self.lan.tmp / "sink.json")).wait_for("ready:", 60)
        self.start("D", "recorder-results", "record", "--name", "recorder-results")
        self.start("B", "workerB", "worker", "--index", "0")
        self.start("C", "workerC", "worker", "--index", "0")
        self.start("A", "recorder-frames", "record", "--name", "recorder-frames")
        self.start("A", "ventilator", "ventilator", "--summary-json", str(self.lan.tmp / "ventilator.json"))
        self.start("A", "publisher", "publisher").wait_for("all subscribers here", 90)

    def status(self, host: str = "A") -> list[dict[str, Any]]:
        result = self.lan.exec(
            host,
            sys.executable,
            "-m",
            "framepipe",
            *self.argv(host, "status", "--json", "--timeout", "5"),
            env=self.env(host),
        )
        assert result.stdout.strip(), result.stderr
        return list(json.loads(result.stdout.strip().splitlines()[-1]))

    def wait_ok(self, *names: str, timeout: float = 180) -> None:
        for name in names or self.procs:
            proc = self.procs[name]
            assert proc.wait(timeout) == 0, f"{name} failed:\n{proc.log()[-4000:]}"
            assert "auth: refused" not in proc.log()

    def check_files(self) -> None:
        """Both files hold every frame exactly once, say complete, and the frames are right."""
        from framepipe.cameras import synthetic_frame

        for stream in ("frames", "results"):
            with h5py.File(self.data / f"lan_{stream}.h5", "r") as f:
                ids = f["entry/data/frame_id"][:]
                assert sorted(ids.tolist()) == list(range(self.n)), f"{stream}: not every frame exactly once"
                assert bool(f["entry/ledger"].attrs["complete"])
                assert int(f["entry/ledger"].attrs["missing"]) == 0
                assert int(f["entry"].attrs["sync_rtt_ns"]) > 0 and "sync_clock_offset_ns" in f["entry"].attrs
                data = f["entry/data/frames"]
                for row in range(0, self.n, 37):
                    frame = synthetic_frame(int(ids[row]), H, W, "uint16", seed=3)
                    if stream == "frames":
                        np.testing.assert_array_equal(data[row], frame)
                    else:
                        ref = np.abs(np.fft.rfft2(frame.astype(np.float64))) ** 2
                        np.testing.assert_allclose(data[row], ref, rtol=1e-4, atol=ref.max() * 1e-6)

    def sink_summary(self) -> dict[str, Any]:
        return dict(json.loads((self.lan.tmp / "sink.json").read_text()))

    def wait_received(self, count: int, timeout: float = 90) -> list[dict[str, Any]]:
        """Poll the sink's status endpoint until it holds ``count`` results (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = self.status()
            sink = next(s for s in statuses if s["name"] == "sink")
            if sink.get("counters", {}).get("received", 0) >= count:
                return statuses
            assert time.monotonic() < deadline, f"sink did not reach {count} results: {sink}"


def test_four_hosts_every_frame_exactly_once_with_curve(lan: Lan, keys: Path) -> None:
    run = Run(lan, keys, 300, **{"camera.fps": 60.0})
    run.start_all()
    statuses = run.status()  # from host A, over CURVE, with the operator's key (A is the operator's console)
    by_name = {s["name"]: s for s in statuses}
    for name, addr in (("publisher", "A"), ("ventilator", "A"), ("recorder-frames", "A"), ("sink", "D")):
        assert by_name[name]["state"] == "running", by_name[name]
        assert by_name[name]["url"].startswith(f"tcp://{HOSTS[addr]}:")
    assert by_name["recorder-results"]["state"] == "running"
    # host B's key is a worker's: it may read status, not stop the run
    stop = lan.exec("B", sys.executable, "-m", "framepipe", *run.argv("B", "status", "--stop"), env=run.env("B"))
    assert stop.returncode == 1 and stop.stdout.count("control refused from key hostB (role worker)") == 5, (
        stop.stdout + stop.stderr
    )
    run.wait_ok()
    run.check_files()
    per_worker = run.sink_summary()["per_worker"]
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
    assert sum(per_worker.values()) == 300


def test_worker_host_link_down_frames_redispatched(lan: Lan, keys: Path) -> None:
    n = 400
    run = Run(lan, keys, n, **{"camera.fps": 60.0})
    run.start_all()
    statuses = run.wait_received(60)
    assert sum(s["role"] == "worker" and s["state"] == "seen" for s in statuses) == 2
    _run("ip", "-n", lan.ns["B"], "link", "set", "eth0", "down")  # host B drops off the LAN
    run.wait_ok("publisher", "ventilator", "sink", "recorder-frames", "recorder-results", "workerC")
    run.check_files()
    summary = run.sink_summary()
    assert summary["missing"] == 0 and summary["received"] == n
    assert len(summary["workers_lost"]) == 1, "the sink noticed host B's worker went silent"
    vent = json.loads((lan.tmp / "ventilator.json").read_text())
    assert vent["redispatched"] > 0, "B's unacknowledged frames were sent again"
    assert "lost" in run.procs["sink"].log()


def _netem_reason(lan: Lan) -> str | None:
    probe = lan.exec("B", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
    if probe.returncode != 0:
        return f"`tc qdisc ... netem` fails here (kernel without sch_netem?): {probe.stderr.strip()}"
    lan.exec("B", "tc", "qdisc", "del", "dev", "lo", "root")
    return None


def test_netem_delay_and_loss_every_frame(lan: Lan, keys: Path) -> None:
    reason = _netem_reason(lan)
    if reason:
        pytest.skip(reason)
    # 40±10 ms and 3 % loss on host A's link: every frame crosses it (tasks out, acks in)
    result = lan.exec("A", "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "40ms", "10ms", "loss", "3%")
    assert result.returncode == 0, result.stderr
    run = Run(lan, keys, 200)
    run.start_all()
    run.wait_ok()
    run.check_files()
    stats = lan.exec("A", "tc", "-s", "qdisc", "show", "dev", "eth0").stdout
    assert "netem" in stats and " dropped 0," not in stats, f"netem dropped nothing:\n{stats}"


def test_shaped_link_every_frame(lan: Lan, keys: Path) -> None:
    """A slow link that queues and drops (tbf: rate, burst, small queue) — runs where netem is missing."""
    result = lan.exec(
        "A", "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "4mbit", "burst", "4kb", "limit", "16kb"
    )
    if result.returncode != 0:
        pytest.skip(f"`tc qdisc ... tbf` fails here: {result.stderr.strip()}")
    run = Run(lan, keys, 150)
    run.start_all()
    run.wait_ok()
    run.check_files()
    stats = lan.exec("A", "tc", "-s", "qdisc", "show", "dev", "eth0").stdout
    overlimits = int(stats.split("overlimits")[1].split()[0])
    assert overlimits > 0, f"the shaper never held a packet back:\n{stats}"
    print(f"\nhost A link (tbf 4mbit): {' '.join(stats.split())}")
