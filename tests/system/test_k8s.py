"""deploy/k8s rendered with `kubectl kustomize` (base and LAN overlay) and validated offline
against the Kubernetes schemas (kubernetes-validate), as .ci/run does; then what the
manifests promise, read from the rendered objects: the config is framepipe's own and a
standing deployment, every probe asks a component that has a status endpoint, every Secret
key a pod mounts is one make-secrets.sh makes, and the LAN overlay pins the components.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from framepipe.config import load_config
from framepipe.ops.status import endpoints

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBECTL = shutil.which("kubectl")
#: the oldest Kubernetes the manifests are validated against
KUBERNETES = "1.30.0"

try:
    import kubernetes_validate
    import yaml  # kubernetes-validate's own dependency
except ImportError:  # pragma: no cover - CI installs it (the test extra)
    kubernetes_validate = yaml = None

needs_tools = pytest.mark.skipif(
    (KUBECTL is None or kubernetes_validate is None) and not os.environ.get("CI"),
    reason="kubectl (apt-get install kubernetes-client) or kubernetes-validate (pip) is not installed",
)


def render(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None, "CI must render the manifests: install kubernetes-client (.ci/run)"
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def validated(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    assert kubernetes_validate is not None, "CI must validate the manifests: pip install kubernetes-validate"
    objects = render(path)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def pod(objects: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    return dict(objects[("Deployment", f"framepipe-{name}")]["spec"]["template"]["spec"])


def mounted_secret_keys(objects: dict[tuple[str, str], dict[str, Any]]) -> set[tuple[str, str]]:
    """(Secret name, key) of every key a pod mounts."""
    out = set()
    for (kind, _), obj in objects.items():
        if kind != "Deployment":
            continue
        for volume in obj["spec"]["template"]["spec"].get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                for item in source["secret"]["items"]:
                    out.add((source["secret"]["name"], item["key"]))
            if "secret" in volume:
                out.add((volume["secret"]["secretName"], "*"))
    return out


@needs_tools
def test_the_base_renders_validates_and_is_a_standing_framepipe_deployment(tmp_path: Path) -> None:
    objects = validated(K8S / "base")
    config_map = next(obj for (kind, _), obj in objects.items() if kind == "ConfigMap")
    toml = tmp_path / "framepipe.toml"
    toml.write_text(config_map["data"]["framepipe.toml"])
    config = load_config(str(toml), [])
    assert config.run.serve, "a standing deployment: idle until acquire"
    assert tomllib.loads(toml.read_text())["security"]["key_dir"] == "/etc/framepipe/keys"
    names = {ep.name for ep in endpoints(config)}
    deployments = {name for kind, name in objects if kind == "Deployment"}
    assert deployments == {
        f"framepipe-{n}"
        for n in ("publisher", "ventilator", "sink", "worker", "recorder-frames", "recorder-results", "web")
    }
    for name in deployments:
        spec = objects[("Deployment", name)]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["args"][-2:] == ["--config", "/etc/framepipe/config/framepipe.toml"]
        assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["fsGroup"] == 10001
        probe = container.get("readinessProbe")
        if name == "framepipe-worker":
            assert probe is None, "workers have no status endpoint: the sink reports them"
        elif name == "framepipe-web":
            assert probe["httpGet"]["port"] == "http"
        else:
            command = probe["exec"]["command"]
            assert command[command.index("--only") + 1] in names, command
    assert objects[("Deployment", "framepipe-worker")]["spec"]["replicas"] >= 1

    # every Secret key a pod mounts is one that make-secrets.sh makes (keys generated here)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    made = subprocess.run(
        ["bash", str(K8S / "make-secrets.sh"), str(tmp_path / "keys")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    secrets = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(made.stdout) if doc}
    for secret in secrets.values():
        kubernetes_validate.validate(secret, KUBERNETES, strict=True)
    for name, key in mounted_secret_keys(objects):
        assert name in secrets, f"no Secret {name} from make-secrets.sh"
        assert key == "*" or key in secrets[name]["data"], f"Secret {name} has no key {key}"
    # one client key per pod identity: no two pods mount the same client key
    client_keys = [(secret, key) for secret, key in mounted_secret_keys(objects) if secret.startswith("framepipe-key-")]
    assert len(client_keys) == len({s for s, _ in client_keys}) == 8


@needs_tools
def test_the_lan_overlay_pins_components_to_the_camera_and_storage_nodes() -> None:
    objects = validated(K8S / "overlays" / "lan")
    publisher = pod(objects, "publisher")
    assert publisher["nodeSelector"] == {"framepipe.io/node": "camera"} and publisher["hostNetwork"] is True
    assert pod(objects, "recorder-frames")["nodeSelector"] == {"framepipe.io/node": "camera"}
    for name in ("sink", "recorder-results"):
        assert pod(objects, name)["nodeSelector"] == {"framepipe.io/node": "storage"}
    for name in ("recorder-frames", "recorder-results"):
        (data,) = [v for v in pod(objects, name)["volumes"] if v["name"] == "data"]
        assert data["hostPath"]["path"] == "/var/lib/framepipe" and "persistentVolumeClaim" not in data
    assert not [name for kind, name in objects if kind == "PersistentVolumeClaim"]
    assert objects[("Deployment", "framepipe-worker")]["spec"]["replicas"] == 6
    assert objects[("Service", "framepipe-web")]["spec"]["type"] == "NodePort"
