"""Role-bound keys: the allowed_clients/<role>/ layout, the ZAP handler's role check and
User-Id, and Trust (who may end a stream or stop), with and without CURVE.

The ZAP tests use real CURVE sockets on loopback tcp (inproc has no CURVE).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from framepipe.config import Config, SecurityConfig
from framepipe.core.errors import ConfigError
from framepipe.testing.ports import free_ports
from framepipe.wire.security import (
    ADMITS,
    ROLES,
    Peer,
    SecureContext,
    Trust,
    admit,
    admitted,
    generate_keys,
    load_allowed,
    make_context,
    peer_address,
    peer_role,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("roles") / "keys"
    generate_keys(out, [*ROLES, "worker:hostB"])
    return out


def test_keys_are_laid_out_by_role(keys: Path) -> None:
    allowed = load_allowed(keys / "allowed_clients")
    by_name = {k.name: k.role for k in allowed.values()}
    assert by_name == {**{r: r for r in ROLES}, "hostB": "worker"}
    public, _ = zmq.auth.load_certificate(keys / "hostB.key")
    assert allowed[public].user_id == "worker:hostB"


def test_the_old_layout_is_refused_with_how_to_migrate(tmp_path: Path, keys: Path) -> None:
    old = tmp_path / "allowed_clients"
    old.mkdir()
    (old / "hostB.key").write_text((keys / "hostB.key").read_text())
    with pytest.raises(ConfigError) as info:
        load_allowed(old)
    message = str(info.value)
    assert "outside a role directory" in message and f"{old}/<role>/" in message and "\n" not in message


def test_unclear_allowed_keys_are_refused(tmp_path: Path, keys: Path) -> None:
    (tmp_path / "a" / "wizard").mkdir(parents=True)
    with pytest.raises(ConfigError, match="not a role directory"):
        load_allowed(tmp_path / "a")
    for role in ("worker", "operator"):  # one key, two roles: which User-Id?
        (tmp_path / "b" / role).mkdir(parents=True)
        (tmp_path / "b" / role / "k.key").write_text((keys / "hostB.key").read_text())
    with pytest.raises(ConfigError, match="one role per key"):
        load_allowed(tmp_path / "b")
    (tmp_path / "c").mkdir()
    with pytest.raises(ConfigError, match="no <role>/"):
        load_allowed(tmp_path / "c")


def test_generate_refuses_unknown_roles_and_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="role must be one of"):
        generate_keys(tmp_path / "k", ["hostB"])
    with pytest.raises(ConfigError, match="must differ"):
        generate_keys(tmp_path / "k", ["worker:x", "recorder:x"])
    assert not (tmp_path / "k").exists(), "nothing written on a refusal"


def test_every_endpoint_label_is_in_the_table() -> None:
    assert admitted("acquisition-control") == {"operator"}
    assert admitted("acquisition-control", ["sink", "ventilator"]) == {"operator", "sink", "ventilator"}
    assert admitted("status") == set(ROLES)
    assert "worker" not in ADMITS["results-sync"] and ADMITS["results-in"] == {"worker"}
    with pytest.raises(ValueError, match="ADMITS"):
        admitted("somewhere-new")
    with pytest.raises(ValueError, match="unknown role"):
        admitted("status", ["wizard"])


def _client(ctx: zmq.Context[Any], kind: int, keys: Path, name: str, url: str) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    assert secret is not None
    sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = public, secret, server_public
    sock.connect(url)
    return sock


def test_zap_admits_only_the_endpoints_roles_and_names_them(keys: Path, caplog: pytest.LogCaptureFixture) -> None:
    denied: list[str] = []
    server = make_context(SecurityConfig(key_dir=str(keys)), on_denied=denied.append, role="sink")
    plain: zmq.Context[Any] = zmq.Context()
    (port,) = free_ports(1)
    url = f"tcp://127.0.0.1:{port}"
    try:
        router = server.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        admit(router, "results-sync")
        router.bind(url)
        with caplog.at_level(logging.WARNING, logger="framepipe.auth"):
            worker = _client(plain, zmq.DEALER, keys, "hostB", url)
            worker.send_multipart([b"", b"from a worker"])
            recorder = _client(plain, zmq.DEALER, keys, "recorder", url)
            recorder.send_multipart([b"", b"from a recorder"])
            assert router.poll(10_000), "the admitted recorder's message did not arrive"
            frames = router.recv_multipart(copy=False)
        assert frames[-1].bytes == b"from a recorder"
        assert peer_role(frames[-1]) == "recorder" and peer_address(frames[-1]) == "127.0.0.1"
        assert Peer.of(frames[-1]) == Peer("127.0.0.1", "recorder:recorder")
        deadline = time.monotonic() + 10
        while not denied and time.monotonic() < deadline:  # the worker's handshake is answered
            assert not router.poll(50), "a worker key got through to results-sync"
        assert denied, "the worker's key was not refused"
        assert not router.poll(0), "a worker key got through to results-sync"
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "auth: refused key" in logged and "(role worker, key hostB) on results-sync" in logged
    finally:
        plain.destroy(linger=0)
        server.stop_authenticator()
        server.destroy(linger=0)


def test_a_curve_bind_without_an_endpoint_name_is_refused(keys: Path) -> None:
    ctx: SecureContext = make_context(SecurityConfig(key_dir=str(keys)))
    (port,) = free_ports(1)
    try:
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        with pytest.raises(ConfigError, match="endpoint's name"):
            sock.bind(f"tcp://127.0.0.1:{port}")
    finally:
        ctx.destroy(linger=0)


def _config(curve: bool, **sections: Any) -> Config:
    security = {"key_dir": "/nonexistent"} if curve else {}
    return Config.model_validate({"security": {**security, **sections.pop("security", {})}, **sections})


@pytest.mark.parametrize(
    ("peer", "action", "allowed"),
    [
        (Peer("10.0.0.9", "ventilator:ventilator"), "end_of_stream", True),
        (Peer("10.0.0.9", "recorder:recorder"), "end_of_stream", False),
        (Peer("127.0.0.1", "worker:hostB"), "end_of_stream", False),  # loopback proves nothing with CURVE
        (Peer("10.0.0.9", "operator:alice"), "control", True),
        (Peer("127.0.0.1", "worker:hostB"), "control", False),
        (Peer("10.0.0.9", None), "control", False),
        (Peer("10.0.0.9", "wizard:x"), "control", False),  # not a role
    ],
)
def test_trust_with_curve_goes_by_the_keys_role(peer: Peer, action: Any, allowed: bool) -> None:
    reason = Trust(_config(curve=True)).may(peer, action)
    assert (reason is None) is allowed, reason
    if not allowed:
        assert action in reason and "\n" not in reason  # type: ignore[operator]


@pytest.mark.parametrize(
    ("address", "action", "allowed"),
    [
        ("127.0.0.1", "end_of_stream", True),  # ventilator.host
        ("127.0.0.2", "end_of_stream", False),  # loopback, but not the ventilator's address
        ("10.0.0.9", "end_of_stream", False),
        ("", "end_of_stream", False),
        ("127.0.0.1", "control", True),
        ("127.0.0.2", "control", True),  # loopback: this machine
        ("::1", "control", True),
        ("10.0.0.7", "control", True),  # security.operator_hosts
        ("::ffff:10.0.0.7", "control", True),
        ("10.0.0.9", "control", False),
    ],
)
def test_trust_without_curve_goes_by_address(address: str, action: Any, allowed: bool) -> None:
    trust = Trust(_config(curve=False, security={"operator_hosts": ["10.0.0.7"]}))
    reason = trust.may(Peer(address), action)
    assert (reason is None) is allowed, reason


def test_trust_resolves_the_ventilator_host_name() -> None:
    trust = Trust(_config(curve=False, ventilator={"host": "localhost"}))
    assert trust.may(Peer("127.0.0.1"), "end_of_stream") is None
    reason = trust.may(Peer("10.1.2.3"), "end_of_stream")
    assert reason is not None and "ventilator.host (localhost)" in reason
    nowhere = Trust(_config(curve=False, ventilator={"host": "no-such-host.invalid"}))
    assert nowhere.may(Peer("127.0.0.1"), "end_of_stream") is not None


def test_operator_hosts_must_be_hosts() -> None:
    with pytest.raises(ValueError, match="not a host"):
        _config(curve=False, security={"operator_hosts": ["*"]})


def test_a_host_name_is_looked_up_again_only_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    from framepipe.wire import security

    lookups: list[str] = []
    answer = ["10.0.0.1"]
    now = [1000.0]

    def getaddrinfo(host: str, *_: Any, **__: Any) -> list[Any]:
        lookups.append(host)
        return [(0, 0, 0, "", (answer[0], 0))]

    monkeypatch.setattr(security.pysocket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(security.time, "monotonic", lambda: now[0])
    trust = Trust(_config(curve=False, ventilator={"host": "vent.lab"}))
    assert trust.may(Peer("10.0.0.1"), "end_of_stream") is None
    answer[0] = "10.0.0.2"  # the ventilator moved
    for _ in range(5):  # a flood of refused asks costs no look-up
        assert trust.may(Peer("10.0.0.2"), "end_of_stream") is not None
    assert lookups == ["vent.lab"]
    now[0] += security.RESOLVE_EVERY_S
    assert trust.may(Peer("10.0.0.2"), "end_of_stream") is None
    assert lookups == ["vent.lab", "vent.lab"]
