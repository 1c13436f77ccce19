"""Acquisitions, as the publisher keeps them: the state of the deployment, the series under
way, and each finished one's summary judged against what the camera produced.

No sockets and an injected clock. The publisher (``framepipe.publisher``) owns the camera
and the control endpoint; it tells :class:`AcquisitionBook` what happens (a series starts,
frames go out, it ends, reports come in) and answers ``state`` and ``wait`` from it.

``complete`` is judged here, against the source: an acquisition is complete only when
every report the deployment owes came in and each says it holds every frame the publisher's
end of stream lists (the frames recorder, the sink for the work stream, and through the sink
each results recorder). A report that never came, a stop that lost frames, a recorder that
died: not complete, whatever an intermediate process saw.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import time
from collections.abc import Callable, Iterable
from typing import Any


class Phase(enum.StrEnum):
    """What the deployment is doing (``framepipe status``, the control endpoint's ``state``)."""

    IDLE = "idle"
    ACQUIRING = "acquiring"
    DRAINING = "draining"
    """The camera stopped; the frames already taken go through and the reports come in."""
    SHUTTING_DOWN = "shutting down"


@dataclasses.dataclass
class Acquisition:
    """One series: what was asked, what the camera produced, what each component reports."""

    id: int
    name: str
    #: frames asked for (0: until stopped)
    frames: int
    settings: dict[str, Any]
    started_at: float
    published: int = 0
    camera_lost: int = 0
    #: why it ended (``complete``, ``stopped``, ``camera error: ...``); None while acquiring
    reason: str | None = None
    ended_at: float | None = None
    #: reports by component name: the frames subscribers' byes and the sink's report
    reports: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: who owes a report (set when it ends)
    owed: tuple[str, ...] = ()

    def progress(self) -> dict[str, Any]:
        """The live view of an acquisition: ``state`` while it runs."""
        return {"id": self.id, "name": self.name, "frames": self.frames, "published": self.published}


def _judge(name: str, report: dict[str, Any]) -> list[str]:
    """What one report says is wrong (empty: it holds every frame)."""
    problems: list[str] = []
    if report.get("error"):
        problems.append(f"{name}: {report['error']}")
    if report.get("complete") is False:
        missing = report.get("missing")
        problems.append(f"{name}: not complete" + (f" ({missing} missing)" if missing else ""))
    for sub, sub_report in (report.get("subscribers") or {}).items():
        if isinstance(sub_report, dict):
            problems.extend(_judge(sub, sub_report))
    return problems


class AcquisitionBook:
    """The deployment's acquisitions: the current one, and the finished ones' summaries."""

    def __init__(self, *, history: int = 16, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.phase = Phase.IDLE
        self.current: Acquisition | None = None
        #: finished acquisitions' summaries, oldest first (bounded)
        self.finished: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self._next_id = 1
        self._report_deadline = 0.0

    @property
    def next_id(self) -> int:
        """The id the next acquisition gets."""
        return self._next_id

    # ------------------------------------------------------------------ a series
    def begin(self, name: str, frames: int, settings: dict[str, Any]) -> Acquisition:
        """A new acquisition starts: the next id, unique and increasing in this deployment."""
        if self.phase is not Phase.IDLE:
            raise RuntimeError(f"an acquisition is {self.phase}")
        acq = Acquisition(self._next_id, name, frames, settings, self.clock())
        self._next_id += 1
        self.current = acq
        self.phase = Phase.ACQUIRING
        return acq

    def end(self, reason: str, *, published: int, camera_lost: int, owed: Iterable[str], timeout_s: float) -> None:
        """The camera stopped (the end of stream went out): drain until every component in
        ``owed`` reported, or ``timeout_s`` passed."""
        acq = self._current()
        acq.reason, acq.published, acq.camera_lost = reason, published, camera_lost
        acq.ended_at = self.clock()
        acq.owed = tuple(owed)
        self.phase = Phase.DRAINING
        self._report_deadline = self.clock() + timeout_s

    def report(self, name: str, acquisition: int | None, counts: dict[str, Any]) -> bool:
        """A component's report (a bye) for ``acquisition``; False if it is for another one."""
        acq = self.current
        if acq is None or acquisition != acq.id:
            return False
        acq.reports[name] = counts
        return True

    def waiting_for(self) -> list[str]:
        """Components whose report is still owed (draining)."""
        acq = self.current
        if acq is None or self.phase is not Phase.DRAINING:
            return []
        return [n for n in acq.owed if n not in acq.reports]

    def may_close(self) -> bool:
        """Draining, and every report is in or the time for them is up."""
        return self.phase is Phase.DRAINING and (not self.waiting_for() or self.clock() >= self._report_deadline)

    def close(self) -> dict[str, Any]:
        """The acquisition is over: its summary, kept for ``wait`` and status; back to idle."""
        acq = self._current()
        summary = self.summary(acq)
        self.finished.append(summary)
        self.current = None
        self.phase = Phase.IDLE
        return summary

    def _current(self) -> Acquisition:
        if self.current is None:
            raise RuntimeError("no acquisition under way")
        return self.current

    # ------------------------------------------------------------------ judging
    def summary(self, acq: Acquisition) -> dict[str, Any]:
        """Everything an operator asks about a finished acquisition, and ``complete``."""
        missing_reports = [n for n in acq.owed if n not in acq.reports]
        problems = [f"{n}: no report" for n in missing_reports]
        for name, report in acq.reports.items():
            problems.extend(_judge(name, report))
        if acq.reason is not None and acq.reason.startswith("camera error"):
            problems.append(acq.reason)
        duration = (acq.ended_at or self.clock()) - acq.started_at
        return {
            "id": acq.id,
            "name": acq.name,
            "frames": acq.frames,
            "settings": acq.settings,
            "published": acq.published,
            "camera_lost": acq.camera_lost,
            "reason": acq.reason or "",
            "duration_s": round(duration, 3),
            "reports": acq.reports,
            "problems": problems,
            "complete": not problems,
        }

    def last(self, acquisition: int | None = None) -> dict[str, Any] | None:
        """A finished acquisition's summary (the newest if ``acquisition`` is None)."""
        for summary in reversed(self.finished):
            if acquisition is None or summary["id"] == acquisition:
                return summary
        return None
