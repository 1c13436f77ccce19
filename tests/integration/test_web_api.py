"""The HTTP API of `framepipe web` through a real HTTP client (httpx), against a real
standing deployment (`framepipe run --serve`): an acquisition started, followed to its end
and its files read back; the refusals (busy, a bad setting, no token) with the CLI's reason;
the status while a component is paused or killed; /metrics against the sink's report.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import h5py
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from framepipe.cameras import synthetic_frame
from framepipe.testing.deployment import Deployment, Proc, free_ports

pytestmark = pytest.mark.integration

PATH = "{data_dir}/{run}_{acquisition:04d}_{acquisition_name}_{stream}.h5"
H, W = 48, 64
TOKEN = "0123456789abcdef0123456789abcdef"


def web_settings() -> dict[str, Any]:
    """A standing deployment with every status endpoint on, and the web server's port."""
    status = free_ports(6)
    return {
        "run.name": "lab",
        "camera.width": W,
        "camera.height": H,
        "camera.reel_frames": 0,
        "camera.seed": 3,
        "publisher.status_port": status[0],
        "ventilator.status_port": status[1],
        "sink.status_port": status[2],
        "viewer.port": status[5],
        "viewer.max_updates_per_s": 5.0,
        "recorders": [
            {"name": f"recorder-{stream}", "stream": stream, "path": PATH, "flush_frames": 1, "status_port": port}
            for stream, port in (("frames", status[3]), ("results", status[4]))
        ],
    }


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path, web_settings())
    yield d
    d.close()


def base_url(d: Deployment) -> str:
    return f"http://127.0.0.1:{d.settings['viewer.port']}"


def start_web(d: Deployment, *extra: str, name: str = "web") -> Proc:
    web = d.start(name, "web", *extra)
    web.wait_for("ready:", timeout=60)
    return web


def serve(d: Deployment, api: httpx.Client) -> Proc:
    """`framepipe run --serve`, ready to acquire: a setting the publisher refuses is refused for
    that reason, not for a missing component (which it checks first)."""
    run = d.start("run", "run", "--serve", "--no-tui")

    def ready() -> bool | None:
        r = api.post("/api/v1/acquisitions", json={"frames": 1, "camera": {"fps": -1}})
        return True if r.status_code == 422 and "camera.fps" in r.json()["detail"] else None

    run.wait_until(ready, "the deployment ready to acquire", 90)
    return run


@pytest.fixture
def api(deployment: Deployment) -> Iterator[httpx.Client]:
    start_web(deployment)
    with httpx.Client(base_url=base_url(deployment), timeout=60) as client:
        yield client


def follow(api: httpx.Client, acq_id: int, timeout: float = 120) -> tuple[dict[str, Any], list[float]]:
    """Follow an acquisition to its end (long polls of 5 s); its last answer and the progress seen."""
    seen: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = api.get(f"/api/v1/acquisitions/{acq_id}", params={"wait_s": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        if body.get("progress") is not None:
            seen.append(body["progress"])
        if body["state"] == "finished":
            return body, seen
    raise AssertionError(f"acquisition {acq_id} did not finish within {timeout} s")


def read(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    with h5py.File(path, "r") as f:
        ids = f["entry/data/frame_id"][:]
        frames = f["entry/data/frames"][:] if "frames" in f["entry/data"] else np.empty(0)
        return ids, frames, dict(f["entry/ledger"].attrs)


def metrics(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus-client's own parser: (sample name, labels) → value."""
    r = api.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text[:300]
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_an_acquisition_through_the_api_its_files_and_metrics(deployment: Deployment, api: httpx.Client) -> None:
    d = deployment
    run = serve(d, api)
    spec = api.get("/api/v1/openapi.json").json()
    assert {"/api/v1/deployment", "/api/v1/acquisitions", "/api/v1/acquisitions/{acq_id}", "/api/v1/stop"} <= set(
        spec["paths"]
    )
    assert {"/api/v1/snap.png", "/api/v1/snap.npy"} <= set(spec["paths"])

    n = 40
    r = api.post("/api/v1/acquisitions", json={"frames": n, "name": "api", "camera": {"fps": 100}})
    assert r.status_code == 201, r.text
    acq_id = r.json()["id"]
    assert acq_id == 1 and r.headers["location"] == "/api/v1/acquisitions/1"
    done, seen = follow(api, acq_id)
    assert seen == sorted(seen) and seen[-1] == 1.0, seen
    assert done["complete"] is True and done["reason"] == "complete" and done["published"] == n, done

    # its files, each listed once and complete, hold every frame exactly once, pixel for pixel
    files = {Path(f["path"]).name: f for f in done["files"]}
    assert set(files) == {"lab_0001_api_frames.h5", "lab_0001_api_results.h5"}, files
    assert all(f["complete"] and f["frames"] == n and f["missing"] == 0 for f in files.values()), files
    ids, frames, ledger = read(d.data / "lab_0001_api_frames.h5")
    assert sorted(ids.tolist()) == list(range(n)) and ledger["complete"]
    for row, fid in enumerate(ids):
        np.testing.assert_array_equal(frames[row], synthetic_frame(int(fid), H, W, "uint16", seed=3, reel_frames=0))
    rids, _, rledger = read(d.data / "lab_0001_api_results.h5")
    assert sorted(rids.tolist()) == list(range(n)) and rledger["complete"]

    # the deployment: idle, the acquisition in its history with its files, every component up
    dep = api.get("/api/v1/deployment").json()
    assert dep["state"] == "idle" and dep["acquisition"] is None
    assert [(a["id"], a["complete"], len(a["files"])) for a in dep["history"]] == [(1, True, 2)]
    states = {c["name"]: c["state"] for c in dep["components"]}
    assert {"publisher", "ventilator", "sink", "recorder-frames", "recorder-results"} <= set(states)
    assert all(s in ("running", "seen") for s in states.values()), states

    # /metrics: the per-acquisition series are the sink's own report, the counters its status
    m = metrics(api)
    sink_report = done["summary"]["reports"]["sink"]
    key = (("acquisition", "1"), ("name", "api"))
    assert (
        m[("framepipe_acquisition_accounted_frames", tuple(sorted((*key, ("component", "sink")))))]
        == sink_report["received"]
    )
    assert m[("framepipe_acquisition_missing_frames", tuple(sorted((*key, ("component", "sink")))))] == 0
    for rec in ("recorder-frames", "recorder-results"):
        assert m[("framepipe_acquisition_accounted_frames", tuple(sorted((*key, ("component", rec)))))] == n
    assert m[("framepipe_acquisition_complete", key)] == 1.0
    assert m[("framepipe_acquisition_state", (("state", "idle"),))] == 1.0
    sink_status = next(c for c in api.get("/api/v1/components").json() if c["role"] == "sink")
    assert (
        m[("framepipe_frames_total", (("component", "sink"), ("role", "sink")))] == sink_status["counters"]["received"]
    )
    assert sink_status["counters"]["received"] == n
    for name in ("publisher", "ventilator", "sink", "recorder-frames", "recorder-results"):
        role = "recorder" if name.startswith("recorder") else name
        assert m[("framepipe_up", (("component", name), ("role", role)))] == 1.0

    # snap: the raw frame as .npy and the same frame as a PNG
    r = api.get("/api/v1/snap.npy")
    assert r.status_code == 200, r.text
    array = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert array.shape == (H, W) and array.dtype == np.uint16
    r = api.get("/api/v1/snap.png")
    png = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert r.headers["content-type"] == "image/png" and png.shape[:2] == (H, W)

    assert api.post("/api/v1/shutdown").status_code in (404, 405), "no shutdown over HTTP"
    assert d.run_cli("shutdown").returncode == 0
    assert run.wait(60) == 0, run.log()[-3000:]
    # the deployment is gone: the API says so at once, it does not hang
    t0 = time.monotonic()
    gone = api.get("/api/v1/deployment").json()
    assert gone["state"] == "down" and time.monotonic() - t0 < 5, gone


def cli_error(d: Deployment, *args: str) -> str:
    out = d.run_cli(*args)
    assert out.returncode != 0, out.stdout
    line = out.stderr.strip().splitlines()[-1]
    return line.partition(": error: ")[2]


def test_refusals_busy_bad_setting_and_bad_body_say_what_the_cli_says(
    deployment: Deployment, api: httpx.Client
) -> None:
    d = deployment
    serve(d, api)
    # a setting the publisher refuses: 422 and the CLI's line
    r = api.post("/api/v1/acquisitions", json={"frames": 5, "camera": {"fps": -1}})
    assert r.status_code == 422
    assert r.json()["detail"] == cli_error(d, "acquire", "--frames", "5", "--set", "camera.fps=-1")
    # a body that is not an acquisition: 422, one line naming the field
    r = api.post("/api/v1/acquisitions", json={"frames": -1})
    assert r.status_code == 422 and r.json()["detail"].startswith("frames: "), r.text
    r = api.post("/api/v1/acquisitions", json={"frames": 1, "colour": "red"})
    assert r.status_code == 422 and r.json()["detail"].startswith("colour: "), r.text

    # busy: an endless acquisition runs; a second one is refused with the CLI's reason
    r = api.post("/api/v1/acquisitions", json={"frames": 0, "name": "endless", "camera": {"fps": 50}})
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/acquisitions", json={"frames": 5})
    assert r.status_code == 409 and r.json()["detail"].startswith("busy: acquiring"), r.text
    assert r.json()["detail"] == cli_error(d, "acquire", "--frames", "5")
    running = api.get("/api/v1/acquisitions/1").json()
    assert running["state"] == "acquiring" and running["progress"] is None
    assert api.get("/api/v1/acquisitions/7").status_code == 404

    # stop: the camera stops, what it took is recorded, the files say stopped
    r = api.post("/api/v1/stop")
    assert r.status_code == 200 and r.json()["state"] in ("acquiring", "draining", "idle"), r.text
    done, _ = follow(api, 1)
    assert done["reason"] == "stopped" and done["published"] > 0
    assert done["complete"] is True, "a drained stop holds every frame the camera produced"


def test_beyond_loopback_a_token_is_required(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    # without a token file it refuses to start: one line, exit 2, nothing bound
    out = d.run_cli("web", "--set", "viewer.host=*", timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "web.token_file" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "short.token").write_text("abc\n")
    out = d.run_cli("web", "--set", "viewer.host=*", "--set", f"web.token_file={tmp_path / 'short.token'}")
    assert out.returncode == 2 and "too short" in out.stderr, out.stderr

    token_file = tmp_path / "web.token"
    token_file.write_text(TOKEN + "\n")
    start_web(d, "--set", "viewer.host=*", "--set", f"web.token_file={token_file}")
    good = {"Authorization": f"Bearer {TOKEN}"}
    bad = {"Authorization": "Bearer " + "x" * 32}
    with httpx.Client(base_url=base_url(d), timeout=30) as api:
        assert api.get("/api/v1/deployment").status_code == 401
        assert api.get("/metrics").status_code == 401
        assert api.get("/api/v1/snap.npy").status_code == 401
        assert api.get("/api/v1/deployment", headers=bad).status_code == 401
        assert api.get("/api/v1/deployment", headers=good).status_code == 200
        with httpx.Client(base_url=base_url(d), timeout=30, cookies={"framepipe_token": TOKEN}) as browser:
            assert browser.get("/api/v1/deployment").status_code == 200
            # a cookie is not enough to change anything (another site's page could make a browser send it)
            assert browser.post("/api/v1/stop").status_code == 401
        body = {"frames": 1}
        assert api.post("/api/v1/acquisitions", json=body).status_code == 401
        assert api.post("/api/v1/acquisitions", json=body, headers=bad).status_code == 403
        # with the token: through to the deployment, which is not there (no pipeline in this test)
        assert api.post("/api/v1/acquisitions", json=body, headers=good).status_code == 503
        assert api.get("/").status_code == 200, "the page itself is open: it asks for the token"

    # open reads: reading needs no token, changing still does
    d.procs[-1].signal(signal.SIGTERM)
    assert d.procs[-1].wait(30) == 0
    start_web(
        d,
        "--set",
        "viewer.host=*",
        "--set",
        f"web.token_file={token_file}",
        "--set",
        "web.open_reads=true",
        name="web-open",
    )
    with httpx.Client(base_url=base_url(d), timeout=30) as api:
        assert api.get("/api/v1/deployment").status_code == 200
        assert api.get("/metrics").status_code == 200
        assert api.post("/api/v1/stop").status_code == 401
        assert api.post("/api/v1/stop", headers=good).status_code == 503


def component(api: httpx.Client, name: str) -> dict[str, Any]:
    return next(
        c for c in api.get("/api/v1/deployment", params={"files": False}).json()["components"] if c["name"] == name
    )


def test_status_while_a_component_is_paused_or_killed(deployment: Deployment, api: httpx.Client) -> None:
    d = deployment
    run = serve(d, api)
    pids = {c["name"]: c["pid"] for c in api.get("/api/v1/components").json() if c.get("pid")}
    assert {"publisher", "recorder-frames"} <= set(pids), pids

    # the publisher paused (SIGSTOP): the deployment is down, the others up, answered in bounded time
    publisher = pids["publisher"]
    import os

    os.kill(publisher, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        r = api.get("/api/v1/deployment", params={"files": False})
        took = time.monotonic() - t0
        body = r.json()
        assert r.status_code == 200 and body["state"] == "down" and "no answer" in body["reason"], body
        states = {c["name"]: c["state"] for c in body["components"]}
        assert states["publisher"] == "down" and states["sink"] == "running", states
        assert took < 2.0 + 2.0, f"answered in {took:.1f} s: one answer timeout, state and statuses asked at once"
        m = metrics(api)
        assert m[("framepipe_acquisition_state", (("state", "down"),))] == 1.0
        assert m[("framepipe_up", (("component", "publisher"), ("role", "publisher")))] == 0.0
        assert api.post("/api/v1/acquisitions", json={"frames": 1}).status_code == 503
        # the probe of one component (Kubernetes' readiness and liveness): this one is down
        probe = d.run_cli("status", "--only", "publisher", "--timeout", "1")
        assert probe.returncode == 1 and "down" in probe.stdout, probe.stdout + probe.stderr
        assert d.run_cli("status", "--only", "sink", "--timeout", "1").returncode == 0
        unknown = d.run_cli("status", "--only", "camera", "--timeout", "1")
        assert unknown.returncode == 2 and "no status endpoint named 'camera'" in unknown.stderr
    finally:
        os.kill(publisher, signal.SIGCONT)
    assert api.get("/api/v1/deployment").json()["state"] == "idle"

    # a recorder killed: down until the supervisor restarts it, then up with its restart counted
    os.kill(pids["recorder-frames"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        c = component(api, "recorder-frames")
        return c if c["state"] == "running" and c.get("pid") != pids["recorder-frames"] else None

    seen_down = component(api, "recorder-frames")["state"] == "down"
    back = run.wait_until(restarted, "the recorder restarted", 60)
    assert back["counters"]["restarts"] == 1
    m = metrics(api)
    assert m[("framepipe_restarts_total", (("component", "recorder-frames"), ("role", "recorder")))] == 1.0
    assert seen_down or "restarting" in run.log()
    # and the deployment still runs an acquisition to the end
    r = api.post("/api/v1/acquisitions", json={"frames": 10, "name": "after"})
    assert r.status_code == 201, r.text
    done, _ = follow(api, r.json()["id"])
    assert done["complete"], json.dumps(done)[:2000]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@pytest.mark.slow
def test_api_round_trip_for_state_and_for_starting_an_acquisition(deployment: Deployment, api: httpx.Client) -> None:
    """p50/p99 of GET /api/v1/deployment?files=false (the control endpoint's state and every
    status endpoint, asked at once) and of POST /api/v1/acquisitions (1 frame, each followed
    to its end before the next); printed, and bounded loosely (a shared CI machine)."""
    d = deployment
    serve(d, api)
    state_ms = []
    for _ in range(300):
        t0 = time.perf_counter()
        r = api.get("/api/v1/deployment", params={"files": False})
        state_ms.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200 and r.json()["state"] == "idle"
    start_ms = []
    for k in range(30):
        t0 = time.perf_counter()
        r = api.post("/api/v1/acquisitions", json={"frames": 1, "name": f"rt{k}"})
        start_ms.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 201, r.text
        follow(api, r.json()["id"])
    (s50, s99), (a50, a99) = percentiles(state_ms), percentiles(start_ms)
    print(
        f"\nAPI round trip: state p50 {s50:.1f} ms p99 {s99:.1f} ms (n={len(state_ms)}); "
        f"start an acquisition p50 {a50:.1f} ms p99 {a99:.1f} ms (n={len(start_ms)})"
    )
    assert s50 < 100 and a50 < 500, (state_ms, start_ms)


def test_with_curve_the_web_server_acquires_as_an_operator_and_watches_as_a_viewer(
    deployment: Deployment, api: httpx.Client, tmp_path: Path
) -> None:
    """Every socket encrypted and authenticated: the web server's control requests use the
    operator's key (only operators acquire), its preview subscriptions the viewer's."""
    d = deployment
    keys = tmp_path / "keys"
    out = subprocess.run(
        [sys.executable, "-m", "framepipe", "keys", "generate", str(keys)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    d.procs[-1].signal(signal.SIGTERM)  # the plaintext web server of the fixture
    assert d.procs[-1].wait(30) == 0
    d.settings["security.key_dir"] = str(keys)
    d.write_config()
    start_web(d, name="web-curve")
    serve(d, api)
    r = api.post("/api/v1/acquisitions", json={"frames": 20, "name": "curve"})
    assert r.status_code == 201, r.text
    done, _ = follow(api, r.json()["id"])
    assert done["complete"] and all(f["complete"] for f in done["files"]), done
    assert {c["state"] for c in api.get("/api/v1/components").json()} <= {"running", "seen"}
    assert api.get("/api/v1/view").json()["streams"]["frames"]["received"] > 0, "the viewer's key is admitted"
