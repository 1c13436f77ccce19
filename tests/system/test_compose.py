"""docker-compose.yml: valid for docker-compose, and in agreement with configs/local.toml.

No Docker engine runs here, so this validates what can be validated without one:
``docker-compose config`` accepts the file, there is one service per component, every
service's command is a framepipe command on a config that exists, its environment is a
valid override of that config, and the ports it exposes are the ports the config gives it.
The deployment is a standing one: every service restarts (``unless-stopped``), runs with
``run.serve`` on, and the publisher's control port is published for ``framepipe acquire``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from framepipe.config import Config, load_config

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
CONFIG_MOUNT = "/etc/framepipe"


def _compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose; .ci/run installs it)")
    return exe


def _yaml_to_json(text: str, compose: str) -> dict[str, Any]:
    try:
        import yaml  # not a framepipe dependency; docker-compose's own Python always has it
    except ImportError:
        interpreter = Path(compose).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
        out = subprocess.run(
            [*interpreter, "-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(out.stdout))
    return dict(yaml.safe_load(text))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    exe = _compose()
    result = subprocess.run(
        [exe, "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, f"docker-compose config rejects the file:\n{result.stderr}"
    return _yaml_to_json(result.stdout, exe)


def _config_of(service: dict[str, Any]) -> tuple[Config, list[str]]:
    """The config a service runs with: its --config file (from configs/) plus its environment."""
    command = list(service["command"])
    path = command[command.index("--config") + 1]
    assert path.startswith(CONFIG_MOUNT + "/"), path
    local = REPO / "configs" / path.removeprefix(CONFIG_MOUNT + "/")
    assert local.is_file(), f"{path} is not a file of configs/"
    env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
    return load_config(local, environ=env), command


def _ports(values: list[Any]) -> set[int]:
    out = set()
    for v in values or []:
        if isinstance(v, dict):  # long syntax
            out.add(int(v["target"]))
        else:
            out.add(int(str(v).split("/")[0].split(":")[-1]))
    return out


def _published_on_loopback(service: dict[str, Any]) -> set[int]:
    out = set()
    for v in service.get("ports") or []:
        if isinstance(v, dict):
            assert v.get("host_ip") == "127.0.0.1", f"status published beyond loopback: {v}"
            out.add(int(v["target"]))
        else:
            assert str(v).startswith("127.0.0.1:"), f"status published beyond loopback: {v}"
            out.add(int(str(v).split("/")[0].split(":")[-1]))
    return out


def test_one_service_per_component(compose: dict[str, Any]) -> None:
    config = load_config(REPO / "configs" / "local.toml")
    expected = {"publisher", "ventilator", "worker", "sink", *(r.name for r in config.recorders)}
    assert set(compose["services"]) == expected
    assert "data" in compose["volumes"]


def test_services_agree_with_the_config(compose: dict[str, Any]) -> None:
    roles = {"publisher", "ventilator", "sink"}
    for name, service in compose["services"].items():
        config, command = _config_of(service)
        subcommand = command[0]
        assert subcommand in (*roles, "worker", "record"), command
        mounts = [str(v) if not isinstance(v, dict) else f"{v['source']}:{v['target']}" for v in service["volumes"]]
        assert any(m.split(":")[1] == CONFIG_MOUNT for m in mounts), "configs/ is mounted"
        assert any(m.split(":")[1] == config.run.data_dir for m in mounts), "the data dir is the data volume"
        if subcommand in roles:
            assert name == subcommand
            section = getattr(config, name)
            wanted = {port for sec, _, port in config.bound_ports() if sec == name}
            assert section.host == name, f"{name}.host must be its service name"
            assert section.bind == "*", "inside a container, bind its interfaces (the compose network)"
            assert _ports(service.get("expose")) == wanted, f"{name}: expose ≠ the config's ports {sorted(wanted)}"
            published = {section.status_port}
            if name == "publisher":  # `framepipe acquire / stop / snap` from the host
                published.add(section.control_port)
            assert _published_on_loopback(service) == published
        elif subcommand == "record":
            rec = config.recorder(command[command.index("--name") + 1])
            assert rec.name == name and rec.host == name
            assert _ports(service.get("expose")) == {rec.status_port}
            assert _published_on_loopback(service) == {rec.status_port}
        else:  # the worker: connects only, so it scales
            assert "ports" not in service and "container_name" not in service and "expose" not in service
        # every component can reach the others by the names in its config
        assert {config.publisher.host, config.ventilator.host, config.sink.host} <= set(compose["services"])


def test_dockerfile_builds_the_cli_with_the_configs() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["framepipe"]' in text
    assert "COPY configs /etc/framepipe" in text
    assert 'pip install ".[' in text or "pip install ." in text


def test_the_deployment_is_standing_and_restarted(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", f"{name}: a dead container is not restarted"
        config, _ = _config_of(service)
        assert config.run.serve, f"{name}: not standing (FRAMEPIPE_RUN__SERVE); it would exit after one acquisition"
    publisher, _ = _config_of(compose["services"]["publisher"])
    assert publisher.publisher.control_port in _published_on_loopback(compose["services"]["publisher"])
