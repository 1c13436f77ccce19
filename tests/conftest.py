from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hdf5plugin  # noqa: F401  (recorders compress with bitshuffle-lz4 by default: h5py reads need the filters)
import pytest

from framepipe.testing.deployment import Deployment


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    """A local deployment with free ports; every process it started is killed afterwards."""
    dep = Deployment(tmp_path)
    try:
        yield dep
    finally:
        dep.close()
