"""What ``framepipe run`` checks before it starts anything: a run that cannot work should fail
in one line per problem with nothing created, not after seven processes have started and left
empty files behind.

The checks only look: no directory is made, no file written, and every test socket is closed
before the run starts.
"""

from __future__ import annotations

import errno
import os
import socket
import string
import sys
from collections.abc import Iterator
from pathlib import Path

from framepipe.config import Config, Endpoint, run_id_now
from framepipe.core.errors import FramepipeError


def preflight(config: Config) -> list[str]:
    """The problems that would stop this run on this machine, one line each; empty when fine."""
    return [
        *_processor_problems(config),
        *_data_dir_problems(config),
        *_port_problems(config),
        *_recorder_file_problems(config),
    ]


def _processor_problems(config: Config) -> Iterator[str]:
    """The workers' processor exists and its parameters pass its own model (each worker
    checks again at its start; here nothing has started yet)."""
    from framepipe.processing.chain import Chain

    cfg = config.workers
    try:
        Chain.build(cfg.processor, cfg.params, default_result=cfg.result)
    except FramepipeError as e:
        yield str(e)


def refused(config: Config) -> bool:
    """Print each problem as one line on stderr, as the CLI prints errors; True when the run
    must not start."""
    problems = preflight(config)
    for problem in problems:
        print(f"framepipe run: error: {problem}", file=sys.stderr)
    return bool(problems)


# ---------------------------------------------------------------- directories
def _writable_dir_problem(what: str, directory: Path) -> str | None:
    """Why ``directory`` cannot be written to or created (its nearest existing ancestor
    checked), or None. For root, permission bits never refuse; a read-only file system
    (``os.access``) and a path under a regular file still do."""
    if directory.exists():
        if not directory.is_dir():
            return f"{what} is not a directory"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{what} is not writable"
        return None
    ancestor = directory.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{what} cannot be created: {str(ancestor)!r} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{what} cannot be created: {str(ancestor)!r} is not writable"
    return None


def _data_dir_problems(config: Config) -> Iterator[str]:
    data_dir = Path(config.run.data_dir)
    problem = _writable_dir_problem(f"run.data_dir {config.run.data_dir!r}", data_dir)
    if problem:
        yield problem
    checked = {data_dir.absolute()}
    run_id = config.run.id or run_id_now()
    for i, rec in enumerate(config.recorders):
        parent = Path(rec.file_path(config.run, run_id)).absolute().parent
        if parent in checked:
            continue
        checked.add(parent)
        problem = _writable_dir_problem(f"recorders.{i}.path: directory {str(parent)!r}", parent)
        if problem:
            yield problem


# ---------------------------------------------------------------- ports
def _starts_publisher(config: Config) -> bool:
    # the launcher's rule (ops/launcher.py): no publisher when nothing subscribes to it
    return config.ventilator.source == "publisher" or any(r.stream == "frames" for r in config.recorders)


def _bound_ports(config: Config) -> Iterator[tuple[str, str, int]]:
    """(config key, bind address, port) of every port the components of ``framepipe run``
    bind here: every ``*_port`` / ``port`` key of their sections, so a new port is covered.

    The viewer is left out: ``framepipe run`` does not start it, and one already watching
    the run's streams is no conflict.
    """
    sections: list[tuple[str, Endpoint]] = []
    if _starts_publisher(config):
        sections.append(("publisher", config.publisher))
    sections += [("ventilator", config.ventilator), ("sink", config.sink)]
    sections += [(f"recorders.{i}", rec) for i, rec in enumerate(config.recorders)]
    for prefix, model in sections:
        host = model.bind or model.host
        for key in type(model).model_fields:
            if key.endswith("_port") or key == "port":
                port = getattr(model, key)
                if port is not None:
                    yield f"{prefix}.{key}", host, port


def _bind_problem(key: str, host: str, port: int) -> str | None:
    """Bind a plain TCP socket where the component will, and close it at once.

    SO_REUSEADDR is on, as libzmq sets it on its listeners: a port still in TIME_WAIT from
    the previous run is free for ZeroMQ, and must be here too, while a port another program
    listens on (or holds without SO_REUSEADDR) is refused alike.
    """
    address = "0.0.0.0" if host == "*" else host
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
    except socket.gaierror as e:
        return f"{key} {port}: cannot bind on {host!r}: {e.strerror}"
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return (
                f"{key} {port} is in use on {host} (another framepipe running? `ss -ltnp 'sport = :{port}'`; "
                "or choose another port)"
            )
        if e.errno == errno.EADDRNOTAVAIL:
            return f"{key} {port}: cannot bind on {host}: not an address of this machine"
        return f"{key} {port}: cannot bind on {host}: {e.strerror}"
    return None


def _port_problems(config: Config) -> Iterator[str]:
    seen: dict[int, list[tuple[str, str]]] = {}
    for key, host, port in _bound_ports(config):
        # config validation catches clashes between publisher, ventilator and sink; recorders'
        # status ports are only known to clash here, where all of them run on one machine
        clash = next((k for h, k in seen.get(port, []) if "*" in (h, host) or h == host), None)
        seen.setdefault(port, []).append((host, key))
        if clash:
            yield f"{key} {port} is also used by {clash}"
            continue
        problem = _bind_problem(key, host, port)
        if problem:
            yield problem


# ---------------------------------------------------------------- recorder files
def _template_fields(template: str) -> set[str]:
    return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(template) if field}


_KEPT = "it would not be overwritten"


def _recorder_file_problems(config: Config) -> Iterator[str]:
    """A file a recorder would create that exists already: the recorder would stop with
    "file exists" mid-run (framepipe never overwrites), after the others had started."""
    for i, rec in enumerate(config.recorders):
        fields = _template_fields(rec.path)
        if "acquisition" in fields or ("run_id" in fields and not config.run.id):
            continue  # a new name every run (or acquisition)
        try:
            path = rec.file_path(config.run, config.run.id)
        except (KeyError, ValueError, IndexError):
            continue  # not a template this version resolves; the recorder will say so
        if not os.path.lexists(path):
            continue
        key = f"recorders.{i}.path {rec.path!r}"
        if "run_id" in fields:
            yield f"{key} with run.id {config.run.id!r} is {path}, which exists: {_KEPT}; choose another run.id"
        else:
            yield f"{key} has no {{run_id}} and {path} exists: {_KEPT}; add {{run_id}}"
