"""`framepipe run`'s checks before it starts anything, with real sockets and directories."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from framepipe.config import Config, load_config
from framepipe.ops.preflight import preflight
from framepipe.testing.deployment import PORT_KEYS, free_ports


def make_config(tmp_path: Path, *overrides: str) -> Config:
    """Free ports for everything, data in tmp_path/data, then ``overrides``."""
    ports = iter(free_ports(sum(len(keys) for keys in PORT_KEYS.values())))
    sets = [f"{section}.{key}={next(ports)}" for section, keys in PORT_KEYS.items() for key in keys]
    return load_config(None, [f"run.data_dir={tmp_path / 'data'}", *sets, *overrides], environ={})


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another program listens on, for the length of the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_runnable_config_has_no_problem_and_nothing_is_created(tmp_path: Path) -> None:
    assert preflight(make_config(tmp_path)) == []
    assert not (tmp_path / "data").exists(), "the check does not create the data dir"


@pytest.mark.parametrize(
    "key", ["publisher.frames_port", "ventilator.tasks_port", "sink.results_port", "sink.status_port"]
)
def test_a_port_in_use_is_named_with_its_key(tmp_path: Path, held_port: int, key: str) -> None:
    assert preflight(make_config(tmp_path, f"{key}={held_port}")) == [
        f"{key} {held_port} is in use on 127.0.0.1 (another framepipe running? "
        f"`ss -ltnp 'sport = :{held_port}'`; or choose another port)"
    ]


def test_recorder_status_ports_are_checked(tmp_path: Path, held_port: int) -> None:
    (problem,) = preflight(make_config(tmp_path, f"recorders.1.status_port={held_port}"))
    assert problem.startswith(f"recorders.1.status_port {held_port} is in use")


def test_a_recorder_status_port_clashing_with_a_sink_port(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cfg.recorders[0].status_port = cfg.sink.results_port
    assert preflight(cfg) == [f"recorders.0.status_port {cfg.sink.results_port} is also used by sink.results_port"]


def test_no_publisher_no_publisher_ports(tmp_path: Path, held_port: int) -> None:
    """Camera straight into the ventilator and no frames recorder: the launcher starts no
    publisher, so its ports may be taken."""
    cfg = make_config(
        tmp_path,
        "ventilator.source=camera",
        f"publisher.frames_port={held_port}",
        'recorders=[{name = "recorder-results", stream = "results"}]',
    )
    assert preflight(cfg) == []


def test_a_port_left_in_time_wait_by_the_previous_run_is_free(tmp_path: Path) -> None:
    """ZeroMQ binds with SO_REUSEADDR, so a port in TIME_WAIT after a run is no obstacle to
    the next one; the check must not refuse it either."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq does
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = listener.accept()
        accepted.close()  # the binding side closes first: its port goes to TIME_WAIT
        assert client.recv(1) == b""
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):  # the situation is real
        plain.bind(("127.0.0.1", port))
    assert preflight(make_config(tmp_path, f"sink.results_port={port}")) == []


def test_a_bind_address_not_on_this_machine(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "ventilator.host=192.0.2.1")  # TEST-NET-1: nobody's address
    assert preflight(cfg) == [
        f"ventilator.tasks_port {cfg.ventilator.tasks_port}: cannot bind on 192.0.2.1: not an address of this machine"
    ]


def test_data_dir_under_a_regular_file(tmp_path: Path) -> None:
    """Fails for root too (tests run as root: permission bits would not)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    data_dir = blocker / "sub"
    assert preflight(make_config(tmp_path, f"run.data_dir={data_dir}")) == [
        f"run.data_dir '{data_dir}' cannot be created: '{blocker}' is not a directory"
    ]


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("")
    assert preflight(make_config(tmp_path)) == [f"run.data_dir '{data_dir}' is not a directory"]


def test_a_recorder_directory_outside_the_data_dir_is_checked(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cfg = make_config(tmp_path, f"recorders.1.path={blocker}/x/{{run_id}}.h5")
    assert preflight(cfg) == [
        f"recorders.1.path: directory '{blocker}/x' cannot be created: '{blocker}' is not a directory"
    ]


def test_an_existing_file_without_run_id_is_flagged(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, "recorders.0.path={data_dir}/x.h5")
    assert preflight(cfg) == []
    existing = tmp_path / "data" / "x.h5"
    existing.parent.mkdir()
    existing.write_text("")
    assert preflight(cfg) == [
        f"recorders.0.path '{{data_dir}}/x.h5' has no {{run_id}} and {existing} exists: "
        "it would not be overwritten; add {run_id}"
    ]


def test_run_id_makes_a_new_file_unless_run_id_is_fixed(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "local_again_frames.h5").write_text("")
    path = "recorders.0.path={data_dir}/{run}_{run_id}_{stream}.h5"
    assert preflight(make_config(tmp_path, path)) == [], "a fresh run id every run"
    (problem,) = preflight(make_config(tmp_path, "run.id=again", path))
    assert problem.startswith("recorders.0.path '{data_dir}/{run}_{run_id}_{stream}.h5' with run.id 'again' is ")
    assert problem.endswith("local_again_frames.h5, which exists: it would not be overwritten; choose another run.id")


def test_every_problem_is_reported_at_once(tmp_path: Path, held_port: int) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("")
    problems = preflight(make_config(tmp_path, f"sink.control_port={held_port}"))
    assert [p.split(" ")[0] for p in problems] == ["run.data_dir", "sink.control_port"]
