"""The one status model: summary file → model → table, the reply layout, the status server.

No sockets: the server's snapshot is driven with a fake source (what status.py serves is a
Protocol, not a Component).
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Any

import pydantic
import pytest

from framepipe.config import Config
from framepipe.core.counters import Count
from framepipe.core.errors import ProtocolError
from framepipe.ops.dashboard import read_summary, stage_rows
from framepipe.ops.status import render_table
from framepipe.runtime.component import Component
from framepipe.runtime.status import MAX_LIST, ComponentStatus, Observed, Queue, State, StatusParts, StatusServer


class Vent(Component):
    """A ventilator-like component without sockets: counters and a window."""

    role = "ventilator"

    def __init__(self) -> None:
        super().__init__(Config(), "ventilator")
        self.in_flight: dict[int, object] = {}
        self.queue: collections.deque[int] = collections.deque()

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update({Count.IN_FLIGHT: len(self.in_flight), Count.QUEUED: len(self.queue), Count.WINDOW: 16})
        out[Count.MISSING_IDS] = list(range(50))
        return out

    def status_parts(self) -> StatusParts:
        return StatusParts(queue=Queue(in_flight=len(self.in_flight), waiting=len(self.queue)))


def test_summary_file_round_trips_through_the_model_into_the_table(tmp_path: Path) -> None:
    vent = Vent()
    vent.open()
    vent.ready()
    vent.counters.update({Count.ACCEPTED: 7, Count.BYTES: 7_000_000, Count.REJECTED: 1})
    vent.in_flight.update({5: object(), 6: object()})
    vent.queue.append(6)
    path = tmp_path / "ventilator.json"
    vent.write_summary(str(path))
    vent.close()

    on_disk = json.loads(path.read_text())
    assert on_disk["component"] == "ventilator" and on_disk["state"] == "running"
    assert on_disk["accepted"] == 7 and on_disk["queue"] == {"in_flight": 2, "waiting": 1}
    status = read_summary(path)
    assert status is not None
    assert (status.name, status.role, status.state) == ("ventilator", "ventilator", State.RUNNING)
    assert status.count(Count.ACCEPTED) == 7 and len(status.counters[Count.MISSING_IDS]) == 50
    assert status.to_summary() == on_disk, "read back and written again: the same file"

    reply = status.to_reply(max_list=MAX_LIST)
    assert reply["counters"][Count.MISSING_IDS][MAX_LIST] == f"... {50 - MAX_LIST} more", "an answer stays short"
    assert ComponentStatus.model_validate(reply).to_reply() == reply
    line = render_table([reply]).splitlines()[1]
    assert line.startswith("ventilator") and " running " in line
    assert "accepted 7" in line and "in_flight=2 waiting=1" in line and "rejected 1" in line
    row = stage_rows([status])[0]
    assert (row.frames, row.queue, row.rejects) == (7, "in flight 2/16, queued 1", 1)


def test_a_reply_missing_its_identity_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError):
        ComponentStatus.model_validate({"state": "running"})
    assert read_summary(Path("/nonexistent/summary.json")) is None


class FakeSource:
    """What the status server serves, without a Component: copies that may fail."""

    name = "sink"
    role = "sink"
    log = logging.getLogger("fake")

    def __init__(self, failures: int):
        self.counters: collections.Counter[str] = collections.Counter(received=3)
        self.failures = failures
        self.stopped = False

    def current_status(self, rates: dict[str, float] | None = None) -> ComponentStatus:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("dictionary changed size during iteration")
        return ComponentStatus(name=self.name, role=self.role, state=State.RUNNING, rates=rates or {})

    def stop(self) -> None:
        self.stopped = True

    def reject(self, err: ProtocolError, where: str) -> None:
        raise AssertionError(err)


def test_the_server_retries_a_copy_that_raced_then_says_busy() -> None:
    raced = StatusServer(FakeSource(failures=2), sock=None)  # type: ignore[arg-type]
    assert raced._snapshot().state is State.RUNNING
    busy = StatusServer(FakeSource(failures=3), sock=None)  # type: ignore[arg-type]
    assert busy._snapshot().to_reply() == {"name": "sink", "role": "sink", "state": Observed.BUSY}
