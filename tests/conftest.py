from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hdf5plugin  # noqa: F401  (recorders compress with bitshuffle-lz4 by default: h5py reads need the filters)
import pytest

from framepipe.testing.deployment import Deployment


@pytest.fixture(params=[True, False], ids=["shared-memory", "tcp"])
def shared_memory(request: pytest.FixtureRequest) -> bool:
    """Run a module's tests through both same-host paths: a module opts in with
    ``pytest.mark.usefixtures("shared_memory")`` and its deployment gets the setting."""
    return bool(request.param)


@pytest.fixture
def deployment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """A local deployment with free ports; every process it started is killed afterwards."""
    dep = Deployment(tmp_path)
    if "shared_memory" in request.fixturenames:
        dep.settings["transport.shared_memory"] = request.getfixturevalue("shared_memory")
    try:
        yield dep
    finally:
        dep.close()
