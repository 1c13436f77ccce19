"""/metrics from what the components report, through prometheus-client's exposition and
parser; and the Grafana dashboard asks only for series the collector makes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from framepipe.ops.web.metrics import DeploymentCollector

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "framepipe.json"

STATUSES: list[dict[str, Any]] = [
    {
        "name": "publisher",
        "role": "publisher",
        "state": "running",
        "uptime_s": 12.5,
        "counters": {"published": 300, "bytes": 1_000_000, "camera_lost": 2, "rejected": 1, "restarts": 1},
        "rates": {"published_per_s": 99.5},
    },
    {
        "name": "ventilator",
        "role": "ventilator",
        "state": "running",
        "counters": {"accepted": 300, "source_gaps": 0},
        "queue": {"in_flight": 16, "waiting": 3},
    },
    {"name": "sink", "role": "sink", "state": "running", "counters": {"received": 298, "missing": 2}},
    {"name": "recorder-frames", "role": "recorder", "state": "down", "error": "no answer within 2 s"},
    {"name": "worker-a-0", "role": "worker", "state": "seen"},
    {"name": "worker-b-0", "role": "worker", "state": "lost"},
]
SUMMARY = {
    "id": 4,
    "name": "scan",
    "reports": {
        "recorder-frames": {"written": 300, "missing": 0, "complete": True, "path": "/d/f.h5"},
        "sink": {"received": 298, "missing": 2, "subscribers": {"recorder-results": {"written": 298, "missing": 2}}},
    },
}


class FakeClient:
    def overview(self) -> dict[str, Any]:
        return {
            "state": "acquiring",
            "acquisition": {"id": 5, "name": "next", "frames": 100, "published": 25, "progress": 0.25},
            "history": [{"id": 4, "name": "scan", "published": 300, "reason": "complete", "complete": False}],
            "components": STATUSES,
        }

    def summary(self, entry: dict[str, Any]) -> dict[str, Any]:
        assert entry["id"] == 4
        return SUMMARY


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeploymentCollector(FakeClient()))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_components_as_metrics_down_ones_only_as_down() -> None:
    m = scrape()
    pub = (("component", "publisher"), ("role", "publisher"))
    assert m[("framepipe_up", pub)] == 1.0 and m[("framepipe_frames_total", pub)] == 300
    assert m[("framepipe_frames_per_second", pub)] == 99.5 and m[("framepipe_bytes_total", pub)] == 1_000_000
    assert m[("framepipe_dropped_frames_total", tuple(sorted((*pub, ("kind", "camera_lost")))))] == 2
    assert m[("framepipe_rejected_messages_total", pub)] == 1 and m[("framepipe_restarts_total", pub)] == 1
    vent = (("component", "ventilator"), ("role", "ventilator"))
    assert m[("framepipe_in_flight_frames", vent)] == 16 and m[("framepipe_queued_frames", vent)] == 3
    assert m[("framepipe_missing_frames", (("component", "sink"), ("role", "sink")))] == 2
    down = (("component", "recorder-frames"), ("role", "recorder"))
    assert m[("framepipe_up", down)] == 0.0
    assert [k for k in m if dict(k[1]).get("role") == "recorder"] == [("framepipe_up", down)], "down: no figures"
    assert m[("framepipe_up", (("component", "worker-a-0"), ("role", "worker")))] == 1.0
    assert m[("framepipe_up", (("component", "worker-b-0"), ("role", "worker")))] == 0.0


def test_acquisitions_as_metrics() -> None:
    m = scrape()
    assert m[("framepipe_acquisition_state", (("state", "acquiring"),))] == 1.0
    assert m[("framepipe_acquisition_state", (("state", "idle"),))] == 0.0
    assert m[("framepipe_acquisition_progress", (("acquisition", "5"), ("name", "next")))] == 0.25
    scan = (("acquisition", "4"), ("name", "scan"))
    assert m[("framepipe_acquisition_published_frames", scan)] == 300
    assert m[("framepipe_acquisition_complete", scan)] == 0.0
    for component, held, missing in (("recorder-frames", 300, 0), ("sink", 298, 2), ("recorder-results", 298, 2)):
        labels = tuple(sorted((*scan, ("component", component))))
        assert m[("framepipe_acquisition_accounted_frames", labels)] == held
        assert m[("framepipe_acquisition_missing_frames", labels)] == missing


def test_the_grafana_dashboard_asks_for_series_the_collector_makes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    asked = {name for e in exprs for name in re.findall(r"\bframepipe_[a-z_]+", e)}
    made = {name for name, _ in scrape()}
    assert asked and asked <= made, asked - made
    families = {re.sub(r"_total$", "", n) for n in made}
    assert {"framepipe_up", "framepipe_frames", "framepipe_dropped_frames", "framepipe_restarts"} <= families
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"${DS_PROMETHEUS}"}
