"""A new operator's first day through the real CLI (issue 19): one exit code per outcome,
text meant for people, errors that name what is wrong, `status` that needs no flags, pipes
that end quietly, and a config to edit without a checkout.

Exit codes (README, "Exit codes"): 0 every frame accounted for; 1 incomplete or failed;
2 usage or config error, nothing started; 130 interrupted before the first frame.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from framepipe.config import Config, load_config
from framepipe.runtime.processes import Child, framepipe_argv
from framepipe.testing.deployment import PORT_KEYS, child_env, free_ports

pytestmark = pytest.mark.integration

SMALL = ["--set", "camera.width=32", "--set", "camera.height=32"]
#: what a Python repr looks like in a line meant for people
REPRS = re.compile(r"\{'|\bNone\b|\(addr=|=True\b|=False\b|\bTrue\b|\bFalse\b")


def port_env() -> dict[str, str]:
    ports = iter(free_ports(sum(len(v) for v in PORT_KEYS.values())))
    return {f"FRAMEPIPE_{s.upper()}__{k.upper()}": str(next(ports)) for s, keys in PORT_KEYS.items() for k in keys}


def framepipe(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        framepipe_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env({**port_env(), **(env or {})}),
        cwd=cwd,
    )


def test_a_complete_run_says_so_in_words_and_exits_0(tmp_path: Path) -> None:
    proc = framepipe(tmp_path, "run", "--no-tui", "--set", "camera.count=30", *SMALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"latency p50 \d+\.\d ms · p95 \d+\.\d ms · p99 \d+\.\d ms", proc.stdout), proc.stdout
    assert re.search(r"^\s+missing\s+0\s", proc.stdout, re.M) and "every frame accounted for" in proc.stdout
    for line in (proc.stdout + proc.stderr).splitlines():
        assert not REPRS.search(line), line
    assert re.search(r"said bye: acquisition 1, written 30 of 30, .*complete", proc.stderr), proc.stderr


def test_json_logs_carry_fields_not_sentences(tmp_path: Path) -> None:
    proc = framepipe(tmp_path, "run", "--no-tui", "--log-json", "--set", "camera.count=20", *SMALL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert lines and all({"time", "component", "level", "event", "message"} <= set(x) for x in lines)
    (closed,) = [x for x in lines if x["event"] == "files closed" and x["component"] == "recorder-frames"]
    assert closed["written"] == 20 and closed["missing"] == 0 and closed["complete"] is True
    byes = [x for x in lines if x["event"] == "bye"]
    assert any(x.get("written") == 20 and x.get("complete") is True for x in byes), byes


def test_a_failed_component_is_named_with_its_reason_and_the_run_exits_1(tmp_path: Path) -> None:
    (tmp_path / "broken.h5").write_text("not an HDF5 file")  # exists, so preflight lets it through
    proc = framepipe(
        tmp_path, "run", "--no-tui", "--set", "camera.kind=replay", "--set", "camera.path=broken.h5", *SMALL
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r"^\s+failed: publisher: replay broken\.h5", proc.stdout, re.M), proc.stdout
    assert "=-15" not in proc.stdout and "exit codes" not in proc.stdout
    assert "NOT every frame accounted for" in proc.stdout


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["security.key_dir=keys"], "security.client_secret_key: CURVE key keys/ventilator.key_secret is missing"),
        (["camera.kind=replay", "camera.path=gone.h5"], "camera.path: gone.h5 does not exist"),
        (["camera.widht=64"], "--set: camera.widht: unknown key; did you mean camera.width?"),
    ],
)
def test_what_cannot_work_is_refused_before_anything_starts_exit_2(tmp_path: Path, sets: list[str], says: str) -> None:
    args = [item for s in sets for item in ("--set", s)]
    proc = framepipe(tmp_path, "run", "--no-tui", *args, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert any(line.startswith(f"framepipe run: error: {says}") for line in proc.stderr.splitlines()), proc.stderr
    assert "Traceback" not in proc.stderr and "ready:" not in proc.stderr, "nothing started"
    assert not (tmp_path / "data").exists()


def test_an_env_var_error_names_the_variable(tmp_path: Path) -> None:
    proc = framepipe(tmp_path, "run", env={"FRAMEPIPE_CAMRA__WIDTH": "64"}, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "framepipe run: error: environment FRAMEPIPE_CAMRA__WIDTH: camra: unknown key; did you mean camera?"
    )


def test_a_numeric_serial_is_a_serial() -> None:
    assert load_config(None, ["camera.serial=40012345"], environ={}).camera.serial == "40012345"
    assert load_config(None, [], environ={"FRAMEPIPE_CAMERA__SERIAL": "40012345"}).camera.serial == "40012345"


@pytest.mark.timeout(120)
def test_ctrl_c_before_the_first_frame_ends_at_once_with_130_and_no_file(tmp_path: Path) -> None:
    # a subscriber that never comes: the publisher waits, no frame is ever taken
    argv = framepipe_argv("run", "--no-tui", "--set", 'publisher.subscribers=["ventilator","recorder-frames","x"]')
    run = Child("run", argv, tmp_path / "run.log", env=child_env(port_env()), cwd=tmp_path)
    try:
        run.wait_for("waiting for subscribers", timeout=60)
        run.wait_for("recorder-results said hello", timeout=60)  # everyone up, waiting
        t0 = time.monotonic()
        run.signal(signal.SIGINT)
        code = run.wait(30)
        took = time.monotonic() - t0
    finally:
        run.kill()
    out = run.log()
    assert code == 130, out[-3000:]
    assert took < 5.0, f"stopped in {took:.1f} s: nothing to drain, so no drain wait"
    assert "interrupted after" in out and "before the first frame: nothing written" in out
    assert list(tmp_path.rglob("*.h5")) == [], "no empty files"


@pytest.mark.timeout(120)
def test_status_answers_with_no_flags_under_run_status(tmp_path: Path) -> None:
    # the standard status ports on loopback: held by this test only if free
    argv = framepipe_argv("run", "--no-tui", "--status", "--set", "camera.count=0", "--set", "camera.fps=20", *SMALL)
    env = child_env(port_env())
    run = Child("run", argv, tmp_path / "run.log", env=env, cwd=tmp_path)
    try:
        run.wait_for("acquisition 1 'local' starts", timeout=60)
        proc = subprocess.run(
            framepipe_argv("status", "--json"), capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        states = {s["name"]: s["state"] for s in json.loads(proc.stdout)}
        for name in ("publisher", "ventilator", "sink", "recorder-frames", "recorder-results"):
            assert states[name] == "running", states
        # piped into head: ends quietly
        piped = subprocess.run(
            " ".join(framepipe_argv("status", "--json")) + " | head -c 10",
            shell=True,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            cwd=tmp_path,
        )
        assert piped.stderr == "" and len(piped.stdout) == 10
        run.signal(signal.SIGINT)
        assert run.wait(60) == 0, run.log()[-3000:]
    finally:
        run.kill()


def test_help_into_head_ends_quietly(tmp_path: Path) -> None:
    cmd = " ".join(framepipe_argv("--help")) + " | head -1"
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.stdout.startswith("usage: framepipe") and proc.stderr == ""


def test_config_init_writes_a_commented_copy_and_show_says_where_each_value_came_from(tmp_path: Path) -> None:
    init = framepipe(tmp_path, "config", "init", timeout=60)
    assert init.returncode == 0, init.stderr
    written = tmp_path / "configs" / "local.toml"
    assert "# framepipe" in written.read_text() and load_config(written, environ={}) == Config()
    again = framepipe(tmp_path, "config", "init", timeout=60)
    assert again.returncode == 2 and "exists: not overwritten" in again.stderr
    lan = framepipe(tmp_path, "config", "init", "--lan", "elsewhere", timeout=60)
    assert lan.returncode == 0 and (tmp_path / "elsewhere" / "lan.toml").is_file()
    show = subprocess.run(
        framepipe_argv("config", "show", "--set", "camera.count=7"),
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env({"FRAMEPIPE_WORKERS__COUNT": "3"}),
        cwd=tmp_path,
    )
    assert show.returncode == 0, show.stderr
    lines = show.stdout.splitlines()
    assert re.search(r"^count = 7\s+# --set$", show.stdout, re.M)
    assert re.search(r"^count = 3\s+# environment FRAMEPIPE_WORKERS__COUNT$", show.stdout, re.M)
    assert re.search(rf"^name = \"local\"\s+# {re.escape(str(written.resolve()))}$", show.stdout, re.M), lines[:4]
    assert re.search(r"^id = \"\"\s+# default$", show.stdout, re.M)
