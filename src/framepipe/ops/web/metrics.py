"""``/metrics``: the deployment in Prometheus' exposition format, by prometheus-client.

A custom collector: each scrape asks the deployment (the same bounded queries as the API,
:class:`~framepipe.ops.web.deployment.DeploymentClient`) and turns what the components
report into metric families. Nothing is cached between scrapes, so what Prometheus stores
is what the components said at that moment; a component that does not answer is
``framepipe_up 0`` and has no other series for that scrape.

Per component (labels ``component``, ``role``): up, frames through its stage and their
rate, bytes, drops by kind, rejected messages, frames in flight and queued, restarts,
uptime. Per deployment: the acquisition state (one series per state, 1 for the current).
Per acquisition (labels ``acquisition``, ``name``; the publisher's history, at most
``run.history`` of them): frames published, frames each component accounted for, frames
missing, complete. docs/operators.md lists them; deploy/grafana/ has a dashboard.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from framepipe.core.counters import Count
from framepipe.ops.web.deployment import DOWN, DeploymentClient
from framepipe.runtime.status import THROUGHPUT, Observed

#: every state the deployment reports (``down``: the control endpoint did not answer)
STATES = ("idle", "acquiring", "draining", "shutting down", DOWN)
#: counters that are frames lost on the way, by the name of the kind
DROPS = (Count.GAPS, Count.CAMERA_LOST, Count.SOURCE_GAPS)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class DeploymentCollector(Collector):
    """Collects the deployment's metrics at every scrape."""

    def __init__(self, client: DeploymentClient) -> None:
        self.client = client

    def describe(self) -> list[Metric]:
        return []  # unknown until asked: no scrape at registration

    def collect(self) -> Iterator[Metric]:
        overview = self.client.overview()
        yield from self.components(overview["components"])
        yield from self.acquisitions(overview)

    @staticmethod
    def components(statuses: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["component", "role"]
        up = GaugeMetricFamily("framepipe_up", "1 if the component answered its status endpoint", labels=labels)
        frames = CounterMetricFamily(
            "framepipe_frames", "Frames through the component's stage (published, accepted, ...)", labels=labels
        )
        rate = GaugeMetricFamily(
            "framepipe_frames_per_second", "Frames through the stage over the last second", labels=labels
        )
        nbytes = CounterMetricFamily("framepipe_bytes", "Bytes the component handled (frames or stored)", labels=labels)
        drops = CounterMetricFamily(
            "framepipe_dropped_frames", "Frames lost on the way, by kind", labels=[*labels, "kind"]
        )
        missing = GaugeMetricFamily("framepipe_missing_frames", "Frames missing from the current ledger", labels=labels)
        rejected = CounterMetricFamily("framepipe_rejected_messages", "Invalid or forbidden messages", labels=labels)
        in_flight = GaugeMetricFamily("framepipe_in_flight_frames", "Frames sent and not acknowledged", labels=labels)
        queued = GaugeMetricFamily("framepipe_queued_frames", "Frames waiting in a component's queue", labels=labels)
        restarts = CounterMetricFamily("framepipe_restarts", "Times the supervisor restarted it", labels=labels)
        uptime = GaugeMetricFamily("framepipe_uptime_seconds", "Seconds since the component started", labels=labels)
        for s in statuses:
            key = [str(s.get("name")), str(s.get("role"))]
            alive = s.get("state") not in (Observed.DOWN, Observed.LOST)
            up.add_metric(key, 1.0 if alive else 0.0)
            if not alive:
                continue
            counters: dict[str, Any] = s.get("counters") or {}
            stage = THROUGHPUT.get(str(s.get("role")))
            if stage is not None and _int(counters.get(stage)) is not None:
                frames.add_metric(key, counters[stage])
                if f"{stage}_per_s" in (s.get("rates") or {}):
                    rate.add_metric(key, s["rates"][f"{stage}_per_s"])
            stored = _int(counters.get(Count.BYTES)) or _int(counters.get(Count.STORED_BYTES))
            if stored is not None:
                nbytes.add_metric(key, stored)
            for kind in DROPS:
                if _int(counters.get(kind)) is not None:
                    drops.add_metric([*key, str(kind)], counters[kind])
            for family, value in (
                (missing, _int(counters.get(Count.MISSING))),
                (rejected, _int(counters.get(Count.REJECTED))),
                (restarts, _int(counters.get(Count.RESTARTS, 0))),
            ):
                if value is not None:
                    family.add_metric(key, value)
            queue = s.get("queue") or {}
            flying = _int(queue.get("in_flight")) if "in_flight" in queue else _int(counters.get(Count.IN_FLIGHT))
            if flying is not None:
                in_flight.add_metric(key, flying)
            waiting = _int(queue.get("waiting")) if "waiting" in queue else _int(counters.get(Count.QUEUED))
            if waiting is not None:
                queued.add_metric(key, waiting)
            if isinstance(s.get("uptime_s"), int | float):
                uptime.add_metric(key, s["uptime_s"])
        yield from (up, frames, rate, nbytes, drops, missing, rejected, in_flight, queued, restarts, uptime)

    def acquisitions(self, overview: dict[str, Any]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "framepipe_acquisition_state", "1 for the deployment's current state", labels=["state"]
        )
        for name in STATES:
            state.add_metric([name], 1.0 if overview["state"] == name else 0.0)
        yield state
        labels = ["acquisition", "name"]
        published = GaugeMetricFamily(
            "framepipe_acquisition_published_frames", "Frames the camera produced for the acquisition", labels=labels
        )
        progress = GaugeMetricFamily(
            "framepipe_acquisition_progress", "Published over asked (endless: absent)", labels=labels
        )
        accounted = GaugeMetricFamily(
            "framepipe_acquisition_accounted_frames",
            "Frames a component holds for a finished acquisition (its report)",
            labels=[*labels, "component"],
        )
        missing = GaugeMetricFamily(
            "framepipe_acquisition_missing_frames",
            "Frames a component misses for a finished acquisition",
            labels=[*labels, "component"],
        )
        complete = GaugeMetricFamily(
            "framepipe_acquisition_complete", "1 if every frame is accounted for (finished acquisitions)", labels=labels
        )
        current = overview.get("acquisition")
        if current is not None:
            key = [str(current["id"]), str(current["name"])]
            published.add_metric(key, current.get("published") or 0)
            if current.get("progress") is not None:
                progress.add_metric(key, current["progress"])
        for entry in overview.get("history") or []:
            key = [str(entry["id"]), str(entry["name"])]
            published.add_metric(key, entry.get("published") or 0)
            complete.add_metric(key, 1.0 if entry.get("complete") else 0.0)
            summary = self.client.summary(entry)
            for component, report in _reports((summary or {}).get("reports") or {}):
                count = _int(report.get("written", report.get("received")))
                if count is not None:
                    accounted.add_metric([*key, component], count)
                if _int(report.get("missing")) is not None:
                    missing.add_metric([*key, component], report["missing"])
        yield from (published, progress, accounted, missing, complete)


def _reports(reports: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every component's report in a summary, the sink's subscribers' too."""
    for name, report in reports.items():
        if isinstance(report, dict):
            yield name, report
            yield from _reports(report.get("subscribers") or {})
