"""deploy/systemd/: one unit per component, each one a framepipe command that exists, on the
config path docs/deploy.md installs, restarted on failure.

No systemd runs here as PID 1, so this checks what can be checked without one: the units
parse (``systemd-analyze verify`` where it is installed: it also rejects unknown settings and
values), every component has a unit, each ExecStart is a framepipe subcommand that exists and
whose arguments the CLI accepts, and the config it names loads as a standing deployment.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from framepipe.config import load_config
from framepipe.ops.cli import build_parser

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
CONFIG = "/etc/framepipe/lan.toml"  # where docs/deploy.md installs configs/lan.toml
LAN = REPO / "configs" / "lan.toml"

#: unit file → the framepipe subcommand it runs
COMPONENTS = {
    "framepipe-publisher.service": "publisher",
    "framepipe-ventilator.service": "ventilator",
    "framepipe-sink.service": "sink",
    "framepipe-worker@.service": "worker",
    "framepipe-recorder@.service": "record",
    "framepipe-viewer.service": "view",
}


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}, repeated keys kept (systemd allows them)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, eq, value = line.partition("=")
        assert current is not None and eq, f"{path.name}: not a setting: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    values = [v for k, v in unit.get(section, []) if k == key]
    assert len(values) == 1, f"[{section}] {key}: {values}"
    return values[0]


def instances(unit_name: str) -> list[str]:
    """The instance names a template runs with in the deployment of configs/lan.toml."""
    if unit_name == "framepipe-worker@.service":
        return ["0", "3"]
    if unit_name == "framepipe-recorder@.service":
        return [r.name for r in load_config(LAN).recorders]
    return [""]


def test_every_component_has_a_unit() -> None:
    assert {p.name for p in UNITS.glob("*.service")} == set(COMPONENTS)
    readme = (UNITS / "README.md").read_text()
    for name in COMPONENTS:
        unit = name.removesuffix(".service")  # a template by its instances: framepipe-worker@0
        assert unit in readme, f"deploy/systemd/README.md does not say where {name} goes"


@pytest.mark.parametrize("unit_name", sorted(COMPONENTS))
def test_unit_runs_a_framepipe_command_that_exists(unit_name: str) -> None:
    unit = parse_unit(UNITS / unit_name)
    service = "Service"
    argv = shlex.split(one(unit, service, "ExecStart"))
    assert argv[:2] == ["/usr/bin/env", "framepipe"], argv
    assert argv[2] == COMPONENTS[unit_name]
    help_run = subprocess.run(
        [sys.executable, "-m", "framepipe", argv[2], "--help"], capture_output=True, text=True, timeout=60
    )
    assert help_run.returncode == 0, f"framepipe {argv[2]} --help: {help_run.stderr}"
    assert argv[argv.index("-c") + 1] == CONFIG
    for instance in instances(unit_name):
        args = [a.replace("%i", instance) for a in argv[2:]]
        assert all("%" not in a for a in args), args
        parsed = build_parser().parse_args(args)  # exits (SystemExit) on an argument the CLI refuses
        config = load_config(LAN, parsed.overrides)
        assert config.run.serve, "a unit is one component of a standing deployment"
        if parsed.command == "record":
            assert config.recorder(parsed.name).name == instance


@pytest.mark.parametrize("unit_name", sorted(COMPONENTS))
def test_unit_is_supervised_and_stops_cleanly(unit_name: str) -> None:
    unit = parse_unit(UNITS / unit_name)
    lan = load_config(LAN)
    assert one(unit, "Service", "Restart") == "on-failure"
    assert float(one(unit, "Service", "RestartSec")) > 0
    assert int(one(unit, "Unit", "StartLimitBurst")) > 0
    assert int(one(unit, "Unit", "StartLimitIntervalSec")) > 0
    assert one(unit, "Service", "KillSignal") == "SIGINT"  # a component's clean stop: files closed
    assert int(one(unit, "Service", "TimeoutStopSec")) >= 10
    assert one(unit, "Service", "User") not in ("root", "0")
    assert one(unit, "Service", "WorkingDirectory") == lan.run.data_dir
    env = dict(v.split("=", 1) for k, v in unit["Service"] if k == "Environment")
    # a component uses its role's key in key_dir; a worker host says which worker key is its own
    assert lan.security.key_dir is not None
    key = env.get("FRAMEPIPE_SECURITY__CLIENT_SECRET_KEY")
    if "worker" in unit_name:
        assert key is not None and key.startswith(lan.security.key_dir + "/"), key
    else:
        assert key is None, f"{unit_name} should use its role's key, not {key}"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"


def test_docs_install_the_config_where_the_units_read_it() -> None:
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert CONFIG in deploy
    assert "deploy/systemd" in deploy
    lan = load_config(LAN)
    assert lan.security.key_dir is not None and lan.security.key_dir in deploy
    assert "./keys" not in deploy, "docs/deploy.md generates keys where configs/lan.toml does not look"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    for path in UNITS.glob("*.service"):
        shutil.copy(path, tmp_path / path.name)
    names = ["framepipe-worker@0.service", "framepipe-recorder@recorder-frames.service"]
    names += [p.name for p in tmp_path.glob("*.service") if "@" not in p.name]
    result = subprocess.run(
        [exe, "verify", "--man=no", *(str(tmp_path / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
