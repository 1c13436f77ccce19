"""The deployment as the HTTP API sees it: the publisher's control endpoint and every
component's status endpoint, asked with a bounded wait and turned into plain dicts.

Nothing here knows HTTP. Every call uses :class:`~framepipe.ops.control.Control` (the
client ``framepipe acquire`` uses: same requests, same one-line refusals) and
:func:`~framepipe.ops.status.query_deployment`, on one long-lived ZMQ context, and waits at
most ``web.answer_timeout_s``: a paused or gone deployment is an answer (``down``), never
a hang. Finished acquisitions' summaries never change, so they are kept (bounded by the
publisher's own history) instead of being asked for on every page refresh.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from framepipe.config import Config
from framepipe.ops.control import Control, ControlError, ControlRefused
from framepipe.ops.status import query_deployment
from framepipe.wire.messages import AcquisitionState
from framepipe.wire.security import make_context

#: the phase a deployment that does not answer is in
DOWN = "down"
#: the longest ``wait_s`` a request for an acquisition may ask for
MAX_WAIT_S = 60.0
#: finished summaries kept (the publisher keeps at most 64)
SUMMARIES_KEPT = 64


def files_of(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The files an acquisition's summary lists: one per recorder, with its own verdict."""
    out: list[dict[str, Any]] = []

    def visit(reports: dict[str, Any]) -> None:
        for component, report in reports.items():
            if not isinstance(report, dict):
                continue
            if report.get("path"):
                out.append(
                    {
                        "component": component,
                        "path": report["path"],
                        "frames": report.get("written", report.get("received")),
                        "missing": report.get("missing"),
                        "complete": bool(report.get("complete")),
                    }
                )
            visit(report.get("subscribers") or {})

    visit(summary.get("reports") or {})
    return out


def progress_of(acquisition: dict[str, Any], phase: str) -> dict[str, Any]:
    """An acquisition under way, as the API shows it (``progress`` None when endless)."""
    frames, published = int(acquisition.get("frames") or 0), int(acquisition.get("published") or 0)
    return {
        **acquisition,
        "state": phase,
        "progress": round(min(1.0, published / frames), 4) if frames else None,
    }


class DeploymentClient:
    """Asks one deployment's control and status endpoints; thread-safe (the API's threads share it)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.timeout_s = config.web.answer_timeout_s
        # the operator's role: acquisitions are started and stopped from here
        self.context = make_context(config.security, role="operator")
        self._summaries: collections.OrderedDict[tuple[int, str, int], dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()
        # state and statuses are asked at once, so a down deployment costs one timeout, not two
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="web-deployment")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.context.destroy(linger=0)

    def control(self, timeout_s: float | None = None) -> Control:
        return Control(self.config, name="web", timeout_s=timeout_s or self.timeout_s, context=self.context)

    # ------------------------------------------------------------------ reads
    def state(self) -> dict[str, Any]:
        """The control endpoint's state, or ``down`` with the reason it gave none."""
        try:
            reply = self.control().state()
        except (ControlError, ControlRefused) as e:
            return {"state": DOWN, "reason": str(e), "acquisition": None, "history": []}
        return self._state_dict(reply)

    @staticmethod
    def _state_dict(reply: AcquisitionState) -> dict[str, Any]:
        acq = reply.acquisition
        return {
            "state": reply.state,
            "reason": None,
            "acquisition": progress_of(dict(acq), reply.state) if acq is not None else None,
            "history": list(reply.history or []),
        }

    def components(self) -> list[dict[str, Any]]:
        """Every component's status (``framepipe status --json``); a silent one is ``down``."""
        return query_deployment(self.config, timeout_s=self.timeout_s, ctx=self.context)

    def overview(self) -> dict[str, Any]:
        """The deployment's state and every component's status, asked at the same time."""
        components = self._pool.submit(self.components)
        state = self.state()
        return {**state, "components": components.result(timeout=self.timeout_s + 5)}

    def summary(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        """A finished acquisition's summary (a ``history`` entry names it); None if gone."""
        key = (int(entry["id"]), str(entry.get("name")), int(entry.get("published") or 0))
        with self._lock:
            kept = self._summaries.get(key)
        if kept is not None:
            return kept
        try:
            summary = self.control().wait(key[0], timeout_s=self.timeout_s)
        except (ControlError, ControlRefused):
            return None
        with self._lock:
            self._summaries[key] = summary
            while len(self._summaries) > SUMMARIES_KEPT:
                self._summaries.popitem(last=False)
        return summary

    def history(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        """The finished acquisitions of ``state``, newest first, each with its files."""
        out = []
        for entry in reversed(state["history"]):
            summary = self.summary(entry)
            out.append({**entry, "state": "finished", "files": files_of(summary) if summary else None})
        return out

    def acquisition(self, acq_id: int, wait_s: float = 0.0) -> dict[str, Any] | None:
        """One acquisition: progress while it runs, its summary once accounted for; None if unknown.

        ``wait_s`` > 0: wait that long for it to be accounted for (then its progress)."""
        state = self.state()
        if state["state"] == DOWN:
            raise ControlError(state["reason"])
        current = state["acquisition"]
        if current is not None and current["id"] == acq_id:
            if wait_s <= 0:
                return dict(current)
            try:
                summary = self.control(timeout_s=wait_s).wait(acq_id, timeout_s=wait_s)
            except ControlError:  # not accounted for yet: how far it got
                again = self.state()["acquisition"]
                if again is not None and again["id"] == acq_id:
                    return dict(again)
                summary = None
            if summary is not None:
                return self._finished(summary)
            state = self.state()
        for entry in state["history"]:
            if entry["id"] == acq_id:
                summary = self.summary(entry)
                return self._finished(summary) if summary else {**entry, "state": "finished", "files": None}
        return None

    @staticmethod
    def _finished(summary: dict[str, Any]) -> dict[str, Any]:
        keep = ("id", "name", "frames", "published", "reason", "complete", "duration_s", "camera_lost", "problems")
        return {
            **{k: summary.get(k) for k in keep},
            "state": "finished",
            "progress": 1.0,
            "files": files_of(summary),
            "summary": summary,
        }

    # ------------------------------------------------------------------ changes
    def acquire(self, frames: int, name: str | None, camera: dict[str, Any]) -> int:
        """Start an acquisition; its id. :class:`ControlRefused` carries the publisher's reason.

        The publisher answers an acquire once the camera is open (up to 30 s more), so a
        state asked first tells a gone deployment (:class:`ControlError` within the answer
        timeout) from a slow camera."""
        control = self.control()
        control.state()
        return control.acquire(frames, name, camera)

    def stop(self) -> dict[str, Any]:
        """End the acquisition under way (the camera stops, what it took drains)."""
        return self._state_dict(self.control().command("stop"))

    def snap(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The newest frame while acquiring, else one grabbed now."""
        return self.control(timeout_s=self.timeout_s).snap()
