"""Four LAN machines as Linux network namespaces, running configs/lan.toml with CURVE on.

::

    ns A 10.77.0.1  publisher, ventilator, recorder-frames ─┐
    ns B 10.77.0.2  worker                                  ├─ veth ─ br0 (in its own ns "sw")
    ns C 10.77.0.3  worker                                  │
    ns D 10.77.0.4  sink, recorder-results                 ─┤
    ns E 10.77.0.5  the operator's console (acquire, shutdown) ─┘

Everything lives in namespaces this test creates (the bridge too, so the host's own
network is never touched) and they are deleted in ``finally``. The components are the
real CLI, started with ``ip netns exec``, from a copy of configs/lan.toml whose example
addresses are replaced by the namespace addresses. Needs root and ``ip netns``.
"""

from __future__ import annotations

import datetime
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

from framepipe.core.counters import steady_rate
from framepipe.testing.deployment import Proc, child_env
from framepipe.testing.files import rows

pytestmark = [pytest.mark.system, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
HOSTS = {"A": "10.77.0.1", "B": "10.77.0.2", "C": "10.77.0.3", "D": "10.77.0.4", "E": "10.77.0.5"}
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
    # the sink is also a client: it reports each acquisition to the publisher's frames-sync
    "D": ["server.key", "server.key_secret", "allowed_clients", "recorder.key_secret", "sink.key_secret"],
    # a machine that only drives the deployment: the servers' public key and the operator's key
    "E": ["server.key", "operator.key_secret"],
}
#: worker hosts use their own key (FRAMEPIPE_SECURITY__CLIENT_SECRET_KEY); the others their role's default
OWN_KEY = {"B": "hostB.key_secret", "C": "hostC.key_secret"}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key directory per host (``keys/A`` ...), holding only what that host needs."""
    base = tmp_path_factory.mktemp("lan-keys")
    made = base / "generated"
    argv = [sys.executable, "-m", "framepipe", "keys", "generate", str(made)]
    for client in ("publisher", "ventilator", "sink", "recorder", "operator", "worker:hostB", "worker:hostC"):
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

    def __init__(self, lan: Lan, keys: Path, n: int, label: str = "", **settings: Any):
        self.lan = lan
        self.n = n
        #: prefixes this deployment's data directory, config and logs (two in one test)
        self.label = label
        self.data = lan.tmp / f"{label}data"
        text = (REPO / "configs" / "lan.toml").read_text()
        for example, host in EXAMPLE.items():
            text = text.replace(example, HOSTS[host])
        self.config = lan.tmp / f"{label}lan.toml"
        self.config.write_text(text)
        # the same file with CURVE off: what a client without keys would run
        self.plain_config = lan.tmp / f"{label}lan-plain.toml"
        self.plain_config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("key_dir")))
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

    def operator_argv(self, host: str, *args: str) -> list[str]:
        """An operator's command on ``host``: the config and that host's keys; ``--set camera.*``
        would be the acquisition's camera settings, so the deployment's are left out."""
        out = [*args, "--config", str(self.config), "--set", f"security.key_dir={self.keys / host}"]
        for key, value in self.sets.items():
            if not key.startswith("camera."):
                out += ["--set", f"{key}={value}"]
        return out

    def start(self, host: str, name: str, *args: str) -> Proc:
        proc = self.lan.start(host, f"{self.label}{name}", self.argv(host, *args), self.env(host))
        self.procs[name] = proc
        return proc

    @property
    def summary_path(self) -> Path:
        return self.lan.tmp / f"{self.label}sink.json"

    def start_all(self) -> Proc:
        self.start("D", "sink", "sink", "--summary-json", str(self.summary_path)).wait_for("ready:", 60)
        self.start("D", "recorder-results", "record", "--name", "recorder-results")
        self.start("B", "workerB", "worker", "--index", "0")
        self.start("C", "workerC", "worker", "--index", "0")
        self.start("A", "recorder-frames", "record", "--name", "recorder-frames")
        self.start("A", "ventilator", "ventilator", "--summary-json", str(self.lan.tmp / "ventilator.json"))
        # JSON log lines: their timestamps are exact (the text format has whole seconds)
        publisher = self.start("A", "publisher", "publisher", "--log-json")
        if self.sets.get("run.serve") != "true":
            publisher.wait_for("all subscribers here", 90)
        return publisher

    def acquire_ready(self, host: str) -> bool | None:
        """True once the publisher would start an acquisition asked from ``host``: an invalid
        setting is refused by name only when no component is missing (checked first)."""
        argv = self.operator_argv(host, "acquire", "--frames", "0", "--no-wait", "--set", "camera.fps=-1")
        out = self.lan.exec(host, sys.executable, "-m", "framepipe", *argv, env=self.env(host))
        return True if "camera.fps" in out.stderr else None

    def log_time(self, name: str, message: str) -> float:
        """When (time.time(), s) component ``name`` logged a line starting with ``message``."""
        for line in self.procs[name].log().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record["message"].startswith(message):
                    return datetime.datetime.fromisoformat(record["time"]).timestamp()
        raise AssertionError(f"{name} never logged {message!r}")

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

    def wait_ok(self, *names: str, timeout: float = 180, refusing: tuple[str, ...] = ()) -> None:
        """Each exits 0, and none but ``refusing`` (where a test knocked) refused a key."""
        for name in names or self.procs:
            proc = self.procs[name]
            assert proc.wait(timeout) == 0, f"{name} failed:\n{proc.log()[-4000:]}"
            assert name in refusing or "auth: refused" not in proc.log(), name

    def files(self, acquisition: int = 1, name: str = "lan") -> dict[str, Path]:
        """The frames and results files of one acquisition, as configs/lan.toml names them
        (``lan_<run id>_<acquisition>_<name>_<stream>.h5``): exactly one of each."""
        out: dict[str, Path] = {}
        for stream in ("frames", "results"):
            found = sorted(self.data.glob(f"lan_*_{acquisition:04d}_{name}_{stream}.h5"))
            assert len(found) == 1, f"{stream} file of acquisition {acquisition} '{name}': {found}"
            out[stream] = found[0]
        return out

    def check_files(self, n: int | None = None, acquisition: int = 1, name: str = "lan") -> None:
        """Both files hold every frame exactly once, say complete, and the frames are right."""
        from framepipe.cameras import synthetic_frame

        n = self.n if n is None else n
        for stream, path in self.files(acquisition, name).items():
            with h5py.File(path, "r") as f:
                ids = f["entry/data/frame_id"][:]
                assert sorted(ids.tolist()) == list(range(n)), f"{path.name}: not every frame exactly once"
                assert bool(f["entry/ledger"].attrs["complete"])
                assert int(f["entry/ledger"].attrs["missing"]) == 0
                assert int(f["entry"].attrs["acquisition"]) == acquisition
                assert f["entry"].attrs["acquisition_name"] == name
                assert int(f["entry"].attrs["sync_rtt_ns"]) > 0 and "sync_clock_offset_ns" in f["entry"].attrs
                data = f["entry/data/frames"]
                for row in range(0, n, 37 if stream == "results" else 1):
                    frame = synthetic_frame(int(ids[row]), H, W, "uint16", seed=3)
                    if stream == "frames":
                        np.testing.assert_array_equal(data[row], frame)
                    else:
                        ref = np.abs(np.fft.rfft2(frame.astype(np.float64))) ** 2
                        np.testing.assert_allclose(data[row], ref, rtol=1e-4, atol=ref.max() * 1e-6)

    def sink_summary(self) -> dict[str, Any]:
        return dict(json.loads(self.summary_path.read_text()))

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
    # host B's key is a worker's: it may read status, not stop the run (the publisher's control
    # endpoint, operator keys only, refuses it at the handshake)
    stop = lan.exec("B", sys.executable, "-m", "framepipe", *run.argv("B", "status", "--stop"), env=run.env("B"))
    assert stop.returncode == 1 and "refused this client's key" in stop.stderr, stop.stdout + stop.stderr
    run.procs["publisher"].wait_for("(role worker, key hostB) on acquisition-control", 10)
    run.wait_ok(refusing=("publisher",))
    run.check_files()
    per_worker = run.sink_summary()["per_worker"]
    assert len(per_worker) == 2 and all(v > 0 for v in per_worker.values()), per_worker
    assert sum(per_worker.values()) == 300
    # the path each connection took: shared memory on host A (publisher → ventilator and
    # frames recorder), TCP to the workers on B and C (another host: the ventilator's
    # same-host tasks socket is not reachable there, and it sends them pixels)
    for name in ("ventilator", "recorder-frames"):
        assert "frames: frames from shared memory" in run.procs[name].log(), run.procs[name].log()
    for name in ("workerB", "workerC"):
        assert "frames read from shared memory" not in run.procs[name].log()
    vent = json.loads((lan.tmp / "ventilator.json").read_text())
    assert vent["transport"] == "shared memory" and vent.get("tasks_local", 0) == 0, vent


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


#: the 1 Gbit/s comparison: 1024² uint16 frames (2 MiB: the link carries ~57/s raw), so the
#: link, not the CPU, sets the pace; a reel of distinct frames replayed in a loop
GBIT_SIZE, GBIT_FRAMES, GBIT_REEL = 1024, 300, 16


def _dark_recording(path: Path) -> None:
    """A framepipe recording of dark frames, the replay camera's source: a 12-bit sensor's
    offset (100) plus read noise (σ = 3 counts) in uint16, each frame its own noise. They
    compress as a real detector's dark or low-light frames do (2.7× in the bench wire row);
    the synthetic camera's compress 1.1×, and it has no setting that makes them noisy."""
    from framepipe.storage.h5file import FrameFile

    rng = np.random.default_rng(15)
    f = FrameFile(path, swmr=False)
    f.open()
    for k in range(GBIT_REEL):
        frame = np.clip(rng.normal(100, 3, (GBIT_SIZE, GBIT_SIZE)), 0, 4095).astype(np.uint16)
        f.append(frame, frame_id=k, t_acq_ns=k * 10_000_000, t_recv_ns=k * 10_000_000)
    f.close({"complete": True})


def test_one_gigabit_link_compressed_frames_go_faster(lan: Lan, keys: Path) -> None:
    """Issue 15: every link shaped by tbf to 1 Gbit/s; the same acquisition (300 dark
    1024² frames replayed, the cheap ``roi`` processor so the CPU is not the limit) with raw
    frames and with bitshuffle-LZ4 frames, every frame exactly once in both; frames/s at the
    sink compared (target ≥ 1.5×). The frames cross the LAN from A (ventilator) to the
    workers on B and C, so A's link is the one that fills."""
    shaper = ("tbf", "rate", "1gbit", "burst", "256kb", "latency", "20ms")
    for host in ("A", "B", "C", "D"):
        result = lan.exec(host, "tc", "qdisc", "add", "dev", "eth0", "root", *shaper)
        if result.returncode != 0:
            pytest.skip(f"`tc qdisc ... tbf` fails here: {result.stderr.strip()}")
    source = lan.tmp / "dark.h5"
    _dark_recording(source)
    fps: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for wire in ("none", "bitshuffle-lz4"):
        run = Run(
            lan,
            keys,
            GBIT_FRAMES,
            label=f"{wire}-",
            **{
                "camera.kind": "replay",
                "camera.path": str(source),
                "camera.replay_loop": "true",
                "camera.replay_pace": "fps",
                "camera.fps": 0.0,
                "camera.width": GBIT_SIZE,
                "camera.height": GBIT_SIZE,
                "workers.processor": "roi",
                "publisher.wire_compression": wire,
            },
        )
        run.start_all()
        run.wait_ok()
        files = run.files()
        for stream, path in files.items():
            with h5py.File(path, "r") as f:
                ids = f["entry/data/frame_id"][:]
                ledger = dict(f["entry/ledger"].attrs)
            exactly_once = sorted(ids.tolist()) == list(range(GBIT_FRAMES))
            assert exactly_once, f"{wire}: {path.name}: not every frame exactly once"
            assert bool(ledger["complete"]) and int(ledger["missing"]) == 0, ledger
            if stream == "frames":
                ratios[wire] = float(ledger.get("wire_ratio", 1.0))
                stored = int(ledger.get("chunks_as_received", 0))
                assert stored == (GBIT_FRAMES if wire != "none" else 0), f"{wire}: {stored} chunks as received"
        summary = run.sink_summary()
        assert summary["received"] == GBIT_FRAMES and summary["missing"] == 0
        rate = steady_rate(summary["received"], summary["first_ns"], summary["last_ns"])
        assert rate, summary
        fps[wire] = rate
    stats = lan.exec("A", "tc", "-s", "qdisc", "show", "dev", "eth0").stdout
    assert int(stats.split("overlimits")[1].split()[0]) > 0, f"the 1 Gbit/s shaper never held a packet back:\n{stats}"
    speedup = fps["bitshuffle-lz4"] / fps["none"]
    report = {
        "link": "tbf 1gbit",
        "frames": f"{GBIT_FRAMES} x {GBIT_SIZE}x{GBIT_SIZE} uint16, dark (offset + read noise), replayed",
        "wire_ratio": ratios["bitshuffle-lz4"],
        "fps_raw": round(fps["none"], 1),
        "fps_compressed": round(fps["bitshuffle-lz4"], 1),
        "speedup": round(speedup, 2),
    }
    print(f"\n{json.dumps(report)}")
    assert ratios["bitshuffle-lz4"] > 2.0, report
    assert speedup >= 1.5, report


#: the operator's console (ns E): it holds the servers' public key and the operator's key only
OPERATOR = "E"


def _first_row(data: Path, acquisition: int, name: str, timeout: float = 60) -> float:
    """time.monotonic() when the acquisition's frames file first shows a row (polled, bounded)."""
    deadline = time.monotonic() + timeout
    pattern = f"lan_*_{acquisition:04d}_{name}_frames.h5"
    while time.monotonic() < deadline:
        if any(rows(path) >= 1 for path in data.glob(pattern)):
            return time.monotonic()
        time.sleep(0.005)  # sleep-ok: the poll period of an outside reader, bounded by the deadline
    raise AssertionError(f"no frame of acquisition {acquisition} '{name}' in {data} within {timeout:g} s")


def _first_recv_ns(path: Path) -> int:
    """When the first frame reached the recorder (its t_recv_ns column, recorder host clock)."""
    with h5py.File(path, "r") as f:
        return int(f["entry/data/t_recv_ns"][:].min())


def _pids(statuses: list[dict[str, Any]]) -> dict[str, int]:
    """Each status endpoint's own PID: publisher, ventilator, sink, both recorders (the
    workers have none: the sink reports them)."""
    return {s["name"]: s["pid"] for s in statuses if s.get("pid")}


@pytest.mark.timeout(900)
def test_two_acquisitions_over_curve_without_restarting_any_process(lan: Lan, keys: Path) -> None:
    """A standing deployment over CURVE: two acquisitions from the operator's console, each
    one command; keys without the operator's role get nothing; shutdown ends every process."""
    # today's figure first: a one-shot deployment, from launching its processes to the first frame
    once = Run(lan, keys, 120, label="oneshot-", **{"camera.fps": 60.0})
    launched, launched_ns = time.monotonic(), time.time_ns()
    once.start_all()
    once_row_s = _first_row(once.data, 1, "lan") - launched
    once.wait_ok()
    once.check_files()
    once_recv_s = (_first_recv_ns(once.files()["frames"]) - launched_ns) / 1e9

    run = Run(lan, keys, 0, **{"camera.fps": 60.0, "run.serve": "true"})
    publisher = run.start_all()
    publisher.wait_until(lambda: run.acquire_ready(OPERATOR), "every component connected", 120)
    pids = {name: proc.pid for name, proc in run.procs.items()}
    served = _pids(run.status(OPERATOR))
    assert len(served) == 5, served

    timings = []
    commands = []
    for acq, (name, frames) in enumerate((("first", 120), ("second", 250)), start=1):
        started = len(lan.procs)
        before = set(run.data.glob("*.h5"))
        launched, launched_ns = time.monotonic(), time.time_ns()
        argv = run.operator_argv(OPERATOR, "acquire", "--frames", str(frames), "--name", name)
        acquire = lan.start(OPERATOR, f"acquire-{name}", argv, {})
        row_s = _first_row(run.data, acq, name) - launched
        assert acquire.wait(180) == 0, acquire.log()
        assert "every frame accounted for" in acquire.log(), acquire.log()
        # the operator typed one command, on one machine, and nothing else was started
        commands.append([p.argv[3] for p in lan.procs[started:]])
        assert set(run.data.glob("*.h5")) - before == set(run.files(acq, name).values()), "one file per stream"
        run.check_files(frames, acq, name)
        first_ns = _first_recv_ns(run.files(acq, name)["frames"])
        starts = run.log_time("publisher", f"acquisition {acq} '{name}' starts")
        timings.append((name, frames, row_s, (first_ns - launched_ns) / 1e9, first_ns / 1e9 - starts))
        assert all(proc.poll() is None for proc in run.procs.values()), "a component exited between acquisitions"

    # the same processes served both: no restart, on any host
    assert {name: proc.pid for name, proc in run.procs.items()} == pids
    assert _pids(run.status(OPERATOR)) == served

    # no keys at all (plaintext) and a valid key of another role (host B's worker key): no acquisition
    files = sorted(run.data.glob("*.h5"))
    plain = lan.start(
        OPERATOR,
        "acquire-plaintext",
        ["acquire", "--frames", "5", "--name", "plain", "--config", str(run.plain_config)],
        {},
    )
    as_worker = lan.start("B", "acquire-worker-key", run.operator_argv("B", "acquire", "--frames", "5"), run.env("B"))
    # both are refused at the handshake, and say so at once (the acquire's own timeout is 35 s)
    assert as_worker.wait(20) == 1, as_worker.log()
    assert "refused this client's key" in as_worker.log() and "hostB.key_secret" in as_worker.log()
    assert plain.wait(20) == 1, plain.log()
    assert "CURVE is on there" in plain.log(), plain.log()
    publisher.wait_for("(role worker, key hostB) on acquisition-control", 10)
    assert "auth: refused key" in publisher.log()
    assert sorted(run.data.glob("*.h5")) == files, "a refused client started an acquisition"
    assert "acquisition 3" not in publisher.log()

    shutdown = lan.exec(OPERATOR, sys.executable, "-m", "framepipe", *run.operator_argv(OPERATOR, "shutdown"))
    assert shutdown.returncode == 0, shutdown.stdout + shutdown.stderr
    run.wait_ok(timeout=120, refusing=("publisher",))  # the refused client above knocked there only

    hosts = {ns: host for host, ns in lan.ns.items()}
    second = commands[1]
    print(
        f"\noperator commands for the second acquisition: {len(second)} on {len({*second})} machine(s) "
        f"({', '.join(hosts[ns] for ns in second)}: framepipe acquire); a one-shot deployment: "
        f"{len(once.procs)} processes started on 4 machines"
    )
    for name, frames, row_s, recv_s, from_start_s in timings:
        print(
            f"acquisition '{name}' ({frames} frames), idle deployment: acquire launched → frames file ≥1 row "
            f"{row_s:.2f} s, → first frame received {recv_s:.2f} s; publisher 'starts' log → first frame "
            f"received {from_start_s * 1000:.0f} ms"
        )
    print(
        f"one-shot run today: first process launched → frames file ≥1 row {once_row_s:.2f} s, "
        f"→ first frame received {once_recv_s:.2f} s"
    )
    assert len(second) == 1 and second == [lan.ns[OPERATOR]]
