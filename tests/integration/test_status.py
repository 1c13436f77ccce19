"""`framepipe status`: every component answers with JSON status, down is down, stop stops.

Also the start sync's round trip and clock offset in the recorders' HDF5 attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import pytest

from framepipe.testing.deployment import Deployment, Proc, free_ports

pytestmark = pytest.mark.integration

RECORDERS = ("recorder-frames", "recorder-results")


def with_status_ports(dep: Deployment, **settings: Any) -> dict[str, str]:
    """Status ports for publisher, ventilator, sink (config file) and recorders (env: a list)."""
    ports = free_ports(5)
    dep.settings.update(
        {
            "publisher.status_port": ports[0],
            "ventilator.status_port": ports[1],
            "sink.status_port": ports[2],
            "camera.height": 32,
            "camera.width": 32,
            **settings,
        }
    )
    dep.write_config()
    return {f"FRAMEPIPE_RECORDERS__{i}__STATUS_PORT": str(ports[3 + i]) for i in range(2)}


def start_all(dep: Deployment, env: dict[str, str]) -> list[Proc]:
    sink = dep.start("sink", "sink", env=env)
    sink.wait_for("ready:")
    procs = [sink, *(dep.start(f"w{i}", "worker", "--index", str(i), env=env) for i in range(2))]
    procs += [dep.start(r, "record", "--name", r, env=env) for r in RECORDERS]
    procs.append(dep.start("ventilator", "ventilator", env=env))
    pub = dep.start("publisher", "publisher", env=env)
    pub.wait_for("all subscribers here")
    return [pub, *procs]


def status(dep: Deployment, env: dict[str, str], *extra: str) -> tuple[int, list[dict[str, Any]]]:
    result = dep.run_cli("status", "--json", "--timeout", "3", *extra, env=env, timeout=60)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


def test_status_of_a_running_deployment_then_down(deployment: Deployment) -> None:
    n = 400
    env = with_status_ports(deployment, **{"camera.count": n, "camera.fps": 80.0})
    procs = start_all(deployment, env)
    # while frames flow: every component answers, workers come from the sink
    code, statuses = status(deployment, env)
    by_name = {s["name"]: s for s in statuses}
    assert code == 0, statuses
    for name in ("publisher", "ventilator", "sink", *RECORDERS):
        s = by_name[name]
        assert s["state"] == "running", s
        assert s["host"] and s["pid"] and s["uptime_s"] >= 0
        assert isinstance(s["counters"], dict) and isinstance(s["rates"], dict)
    assert by_name["publisher"]["role"] == "publisher"
    assert "ventilator" in by_name["publisher"]["peers"]["subscribers"]
    assert set(by_name["ventilator"]["queue"]) == {"in_flight", "waiting"}
    for name in RECORDERS:  # the start sync's measurement, live
        assert by_name[name]["sync"]["rtt_ns"] > 0 and "clock_offset_ns" in by_name[name]["sync"]
    assert by_name["ventilator"]["queue"]["in_flight"] <= 16, "the window bounds what is in flight"
    workers = [s for s in statuses if s["role"] == "worker"]
    assert len(workers) == 2 and all(w["state"] == "seen" for w in workers)
    assert len(by_name["sink"]["workers"]) == 2

    # a second look later shows progress (counters only grow)
    _, later = status(deployment, env)
    later_by_name = {s["name"]: s for s in later}
    assert later_by_name["publisher"]["counters"]["published"] >= by_name["publisher"]["counters"]["published"]

    for proc in procs:
        assert proc.wait(120) == 0, f"{proc.name}:\n{proc.log()[-3000:]}"

    # the start sync measured each recorder's round trip and the publisher's clock offset
    for stream in ("frames", "results"):
        with h5py.File(deployment.data / f"run_{stream}.h5", "r") as f:
            attrs = f["entry"].attrs
            assert 0 < int(attrs["sync_rtt_ns"]) < 30e9
            # one host, one clock: the offset is within the round trip
            assert abs(int(attrs["sync_clock_offset_ns"])) <= int(attrs["sync_rtt_ns"])
            assert sorted(f["entry/data/frame_id"][:].tolist()) == list(range(n))

    # nothing runs now: every component is reported down, within the timeout (no hang)
    code, statuses = status(deployment, env)
    assert code == 1
    assert {s["name"] for s in statuses} == {"publisher", "ventilator", "sink", *RECORDERS}
    assert all(s["state"] == "down" and "no answer" in s["error"] for s in statuses)


def test_table_and_stop_command(deployment: Deployment, tmp_path: Path) -> None:
    # full speed, endless: a stop must still drain
    env = with_status_ports(
        deployment, **{"camera.count": 0, "camera.fps": 0.0, "camera.width": 128, "camera.height": 128}
    )
    procs = start_all(deployment, env)
    table = deployment.run_cli("status", "--timeout", "3", env=env, timeout=60)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    # the deployment first: its state and the acquisition under way (the control endpoint)
    assert lines[0].startswith("deployment: acquiring · acquisition 1 'run' "), lines[0]
    lines = lines[1:]
    assert lines[0].split()[:4] == ["component", "role", "state", "host"]
    for name in ("publisher", "ventilator", "sink", *RECORDERS):
        assert any(line.startswith(name) and " running " in line for line in lines), table.stdout
    assert sum(" worker " in line for line in lines) == 2

    # `status --stop` stops the camera and drains, as `framepipe stop` does: every process
    # exits 0, and both files hold every frame the camera produced (issue: it lost the end)
    stop = deployment.run_cli("status", "--stop", "--timeout", "3", env=env, timeout=60)
    assert stop.returncode == 0 and "stop: the deployment was acquiring" in stop.stdout, stop.stdout + stop.stderr
    for proc in procs:
        assert proc.wait(60) == 0, proc.log()[-2000:]
    publisher = next(p for p in procs if p.name == "publisher")
    published = int(publisher.log().split("end of stream (stopped) after ")[1].split()[0])
    assert published > 0
    for stream in ("frames", "results"):
        with h5py.File(deployment.data / f"run_{stream}.h5", "r") as f:
            ids = sorted(f["entry/data/frame_id"][:].tolist())
            ledger = dict(f["entry/ledger"].attrs)
        assert ids == list(range(published)), f"{stream}: {len(ids)} of {published} frames"
        assert ledger["end_reason"] == "stopped" and ledger["complete"], ledger
    # the status endpoint itself is read-only now
    refused = deployment.run_cli("status", "--json", env=env, timeout=30)
    assert refused.returncode == 1  # everything is down after the stop
