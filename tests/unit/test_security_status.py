"""Pure functions of security.py and status.py: exposure check, key generation, table."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq.auth

from framepipe.config import load_config
from framepipe.core.errors import ConfigError
from framepipe.ops.status import endpoints, render_table
from framepipe.wire.security import generate_keys, is_exposed


@pytest.mark.parametrize(
    ("url", "exposed"),
    [
        ("tcp://127.0.0.1:5550", False),
        ("tcp://localhost:5550", False),
        ("tcp://[::1]:5550", False),
        ("tcp://*:5550", True),
        ("tcp://0.0.0.0:5550", True),
        ("tcp://192.168.50.11:5550", True),
        ("tcp://labhost:5550", True),
        ("inproc://x", False),
    ],
)
def test_is_exposed(url: str, exposed: bool) -> None:
    assert is_exposed(url) is exposed


def test_generate_keys_refuses_bad_names_and_overwrites(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client name"):
        generate_keys(tmp_path / "k", ["worker:server"])
    written = generate_keys(tmp_path / "k", ["worker:a", "recorder:b"])
    assert {p.name for p in written} >= {"server.key", "server.key_secret", "a.key_secret", "b.key"}
    allowed = tmp_path / "k" / "allowed_clients"
    assert set(zmq.auth.load_certificates(allowed / "worker")) == {
        zmq.auth.load_certificate(tmp_path / "k" / "a.key")[0]
    }
    assert not list(allowed.glob("*.key")), "every allowed key is under its role"
    with pytest.raises(ConfigError, match="never overwrites"):
        generate_keys(tmp_path / "k", ["worker:a"])


def test_endpoints_follow_the_config() -> None:
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / "lan.toml", environ={})
    eps = {e.name: e.url for e in endpoints(cfg)}
    assert eps == {
        "publisher": "tcp://192.168.50.11:5552",
        "ventilator": "tcp://192.168.50.11:5561",
        "sink": "tcp://192.168.50.14:5574",
        "recorder-frames": "tcp://192.168.50.11:5580",
        "recorder-results": "tcp://192.168.50.14:5581",
    }
    assert endpoints(load_config(None, environ={})) == [], "no status endpoints unless configured"


def test_status_and_the_browser_pages_look_where_run_status_puts_the_endpoints() -> None:
    """No status port in the config: ``framepipe status``, ``view`` and ``web`` ask the ones
    ``framepipe run --status`` opens; a config that sets any keeps its own."""
    from framepipe.ops.cli import _default_status_ports

    config, defaulted = _default_status_ports(load_config(None, environ={}))
    assert defaulted
    assert {e.name: e.url for e in endpoints(config)} == {
        "publisher": "tcp://127.0.0.1:5552",
        "ventilator": "tcp://127.0.0.1:5561",
        "sink": "tcp://127.0.0.1:5574",
        "recorder-frames": "tcp://127.0.0.1:5580",
        "recorder-results": "tcp://127.0.0.1:5581",
    }
    lan = load_config(Path(__file__).resolve().parents[2] / "configs" / "lan.toml", environ={})
    assert _default_status_ports(lan) == (lan, False)


def test_table_shows_down_components() -> None:
    table = render_table(
        [
            {"name": "sink", "role": "sink", "state": "down", "error": "no answer within 2 s"},
            {
                "name": "publisher",
                "role": "publisher",
                "state": "running",
                "host": "a",
                "uptime_s": 3.2,
                "counters": {"published": 10},
                "rates": {"published_per_s": 5.0},
            },
        ]
    )
    lines = table.splitlines()
    assert lines[1].startswith("sink") and "down" in lines[1] and "no answer" in lines[1]
    assert "published 10" in lines[2] and "5.0/s" in lines[2]
