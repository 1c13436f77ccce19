"""framepipe installed from its wheel, used outside the checkout, works as a checkout does
(issue 19): the README's tour twice in an empty directory, the configs shipped inside the
package, and the built-in defaults those of configs/local.toml.

The venv sees the system's site-packages, so the dependencies are there without a network;
the wheel itself is installed with --no-deps and shadows any other framepipe.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from framepipe.testing.deployment import PORT_KEYS, free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def port_env() -> dict[str, str]:
    ports = iter(free_ports(sum(len(v) for v in PORT_KEYS.values())))
    return {f"FRAMEPIPE_{s.upper()}__{k.upper()}": str(next(ports)) for s, keys in PORT_KEYS.items() for k in keys}


def clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH: the venv's framepipe, not this checkout's src/, must be the one that runs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("FRAMEPIPE_")}
    return {**env, **extra}


def sh(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env or clean_env(), timeout=timeout
    )
    assert proc.returncode == 0, f"{argv}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with framepipe installed from a wheel built from this checkout."""
    base = tmp_path_factory.mktemp("wheel")
    build = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", base / "dist", "-q"]
    if importlib.util.find_spec("hatchling") is not None:
        build.append("--no-build-isolation")  # the build backend is here: no download
    sh(*build, cwd=REPO)
    (wheel,) = (base / "dist").glob("framepipe-*.whl")
    sh(sys.executable, "-m", "venv", "--system-site-packages", base / "venv", cwd=base)
    sh(base / "venv" / "bin" / "python", "-m", "pip", "install", "--no-deps", "-q", wheel, cwd=base)
    return base / "venv"


@pytest.mark.timeout(600)
def test_the_tour_outside_the_checkout_twice_from_a_wheel(venv: Path, tmp_path: Path) -> None:
    bin_ = venv / "bin"
    where = sh(bin_ / "python", "-c", "import framepipe; print(framepipe.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv)), f"not the wheel's framepipe: {where}"
    run = [bin_ / "framepipe", "run", "--no-tui", "--set", "camera.count=20"]
    run += ["--set", "camera.width=64", "--set", "camera.height=48"]
    outputs = [sh(*run, cwd=tmp_path, env=clean_env(**port_env())) for _ in range(2)]
    for out in outputs:
        assert "every frame accounted for" in out, out
    files = sorted((tmp_path / "data").glob("*.h5"))
    # the defaults are configs/local.toml's: run name local, a run id and the acquisition in every name
    assert len(files) == 4, files
    for f in files:
        assert re.fullmatch(r"local_\d{8}T\d{6}Z_0001_local_(frames|results)\.h5", f.name), f.name
        sh(bin_ / "framepipe", "inspect", f, cwd=tmp_path)  # exit 0: readable and complete
    assert len({f.name.split("_")[1] for f in files}) == 2, "two runs, two run ids, nothing overwritten"
    # the configs ship in the package: a copy to edit, which runs as the defaults do
    sh(bin_ / "framepipe", "config", "init", cwd=tmp_path)
    shipped = (tmp_path / "configs" / "local.toml").read_text()
    assert shipped == (REPO / "configs" / "local.toml").read_text()
    shown = sh(bin_ / "framepipe", "config", "show", cwd=tmp_path)
    assert f"# {tmp_path / 'configs' / 'local.toml'}" in shown
