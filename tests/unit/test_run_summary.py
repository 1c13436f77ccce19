"""The end of ``framepipe run`` as a person reads it: reasons in words, latency in ms,
a "missing" figure that agrees with the verdict, and a subscriber's bye without reprs."""

from __future__ import annotations

import re

import pytest

from framepipe.config import Config
from framepipe.ops.launcher import failure_reason, latency_text, print_summary
from framepipe.runtime.status import ComponentStatus
from framepipe.wire.broadcast import bye_text


def status(name: str, role: str, **counters: object) -> ComponentStatus:
    return ComponentStatus.from_summary({"component": name, "role": role, **counters})


def test_latency_in_milliseconds_and_nothing_when_unmeasured() -> None:
    assert latency_text({"p50": 12.34, "p95": 20.0, "p99": 31.96}) == "latency p50 12.3 ms · p95 20.0 ms · p99 32.0 ms"
    assert latency_text({}) == "" and latency_text(None) == ""


def test_a_failure_is_said_in_words_never_as_a_signal_number() -> None:
    assert failure_reason("publisher", -15, None) == "publisher: ended by SIGTERM before it could stop cleanly"
    assert failure_reason("sink", 1, None) == "sink: exited with status 1"
    told = status("recorder-frames", "recorder", error="data: cannot create: Permission denied")
    assert failure_reason("recorder-frames", 1, told) == "recorder-frames: data: cannot create: Permission denied"


def test_the_summary_names_failures_and_its_missing_figure_agrees(capsys: pytest.CaptureFixture[str]) -> None:
    config = Config()
    summaries = {
        "publisher": status("publisher", "publisher", acquired=100, published=100),
        "ventilator": status("ventilator", "ventilator", accepted=100),
        "sink": status("sink", "sink", received=100, missing=0, latency_ms={"p50": 5.0, "p95": 9.0, "p99": 12.0}),
        "recorder-frames": status("recorder-frames", "recorder", written=100, missing=0, gaps=0),
        "recorder-results": status("recorder-results", "recorder", written=60, missing=40, gaps=0, error="disk full"),
    }
    ok = print_summary(config, summaries, {"recorder-results": 1, "publisher": -15}, 3.0)
    out = capsys.readouterr().out
    assert not ok
    assert re.search(r"^\s+missing\s+40\s+latency p50 5\.0 ms · p95 9\.0 ms · p99 12\.0 ms$", out, re.M), out
    assert "  failed: recorder-results: disk full" in out
    assert "  failed: publisher: ended by SIGTERM before it could stop cleanly" in out
    assert "=-15" not in out and "{" not in out
    assert out.rstrip().endswith("NOT every frame accounted for")


def test_a_bye_reads_as_a_sentence() -> None:
    counts = {"gaps": 0, "written": 40, "missing": 0, "complete": True, "acquisition": 1, "expected": 40}
    text = bye_text({**counts, "path": "data/x.h5"})
    assert text == "acquisition 1, written 40 of 40, gaps 0, missing 0, complete, data/x.h5"
    failed = bye_text({"written": 0, "complete": False, "error": "disk full"})
    assert failed == "written 0, not complete, error: disk full"
