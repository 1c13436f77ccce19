"""Config validation: one clear error naming the file and the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from framepipe.config import Config, dump_toml, load_config
from framepipe.core.errors import ConfigError
from framepipe.testing.deployment import child_env

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_shipped_configs_load() -> None:
    cfg = load_config(REPO / "configs" / "local.toml", environ={})
    assert cfg.camera.kind == "synthetic" and cfg.workers.count >= 1
    # local.toml mirrors the embedded defaults; both name files after the run id, so a second
    # run of a config without [[recorders]] gets new files
    assert [r.path for r in cfg.recorders] == [
        "{data_dir}/{run}_{run_id}_{acquisition:04d}_{acquisition_name}_{stream}.h5"
    ] * 2
    default = load_config(None, environ={})
    assert cfg.model_dump() == default.model_dump() | {"run": cfg.run.model_dump()}


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[camera]\nwidht = 5\n", "camera.widht", "unknown key"),
        ("[camera]\nwidth = 'big'\n", "camera.width", "integer"),
        ("[camera]\nwidth = -3\n", "camera.width", "greater than 0"),
        ("[camera]\ndtype = 'float64'\n", "camera.dtype", "uint8"),
        ("[publisher]\nhost = 'not a host!'\n", "publisher.host", "not an IP address"),
        ("[publisher]\nframes_port = 70000\n", "publisher.frames_port", "65535"),
        ("[sink]\nresults_port = 5550\n", "sink.results_port", "also used by publisher.frames_port"),
        ("[nonsense]\nx = 1\n", "nonsense", "unknown key"),
        ("[transport]\nresult_ring_frames = 1\n", "transport.result_ring_frames", "greater than or equal to 2"),
        (
            "[[recorders]]\nname = 'a'\npath = 'data/x.h5'\n[[recorders]]\nname = 'b'\npath = '{data_dir}/x.h5'\n",
            "recorders.1.path",
            "b would write the same file as a ('{data_dir}/x.h5' gives 'data/x.h5')",
        ),
        (
            "[[recorders]]\nname = 'a'\n[[recorders]]\nname = 'b'\n",
            "recorders.1.path",
            "b would write the same file as a",
        ),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[camera\n"), environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_layers_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "[camera]\ncount = 10\nwidth = 64\n")
    env = {"FRAMEPIPE_CAMERA__COUNT": "20", "FRAMEPIPE_CAMERA__HEIGHT": "32"}
    cfg = load_config(path, ["camera.count=30", "publisher.subscribers=['a', 'b']"], environ=env)
    assert (cfg.camera.count, cfg.camera.width, cfg.camera.height) == (30, 64, 32)
    assert cfg.publisher.subscribers == ["a", "b"]
    cfg = load_config(path, ["recorders.1.hwm_frames=5"], environ={})
    assert cfg.recorders[1].hwm_frames == 5


def test_errors_name_flag_or_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"^--set: camera.count: "):
        load_config(path, ["camera.count=-1"], environ={})
    with pytest.raises(ConfigError, match=r"^environment FRAMEPIPE_CAMERA__COUNT: camera.count: "):
        load_config(path, environ={"FRAMEPIPE_CAMERA__COUNT": "lots"})
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["camera.count"], environ={})


def test_cli_bad_config_is_one_line_exit_2_nothing_started(tmp_path: Path) -> None:
    path = write(tmp_path, "[camera]\nwidht = 5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "framepipe", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"framepipe run: error: {path}: camera.widht: unknown key; did you mean camera.width?"]
    assert not (tmp_path / "data").exists(), "nothing started"


def test_dump_toml_is_read_back_as_written(tmp_path: Path) -> None:
    sections = {
        "run": {"name": 'lab "A"\\1', "data_dir": str(tmp_path / "d")},
        "camera": {"fps": 12.5, "count": 0, "dtype": "uint8"},
        "publisher": {"subscribers": ["ventilator"], "policy": "drop"},
        "recorders": [{"name": "r1", "stream": "frames"}, {"name": "r2", "stream": "results"}],
    }
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(sections))
    cfg = load_config(str(path))
    assert (cfg.run.name, cfg.camera.fps, cfg.camera.count, cfg.camera.dtype) == ('lab "A"\\1', 12.5, 0, "uint8")
    assert cfg.publisher.subscribers == ["ventilator"] and cfg.publisher.policy == "drop"
    assert [(r.name, r.stream) for r in cfg.recorders] == [("r1", "frames"), ("r2", "results")]


def test_the_built_in_defaults_are_configs_local_toml() -> None:
    """A wheel installed anywhere runs as a checkout does: same run name, same file names."""
    from framepipe.config.shipped import shipped_config_text

    repo = Path(__file__).resolve().parents[2]
    assert load_config(repo / "configs" / "local.toml", environ={}) == Config()
    assert shipped_config_text("local.toml") == (repo / "configs" / "local.toml").read_text()
    assert "{run_id}" in Config().recorders[0].path and "{acquisition" in Config().recorders[1].path


def test_an_unknown_key_suggests_the_closest_known_one(tmp_path: Path) -> None:
    path = write(tmp_path, "[sink]\nresults_prot = 1\n[[recorders]]\nname = 'a'\nstraem = 'frames'\n")
    with pytest.raises(ConfigError, match=r"sink.results_prot: unknown key; did you mean sink.results_port\?$"):
        load_config(path, environ={})
    path = write(tmp_path, "[[recorders]]\nname = 'a'\nstraem = 'frames'\n")
    with pytest.raises(ConfigError, match=r"recorders.0.straem: unknown key; did you mean recorders.0.stream\?$"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match=r"unknown key$"):
        load_config(None, ["camera.zzzzzz=1"], environ={})
