"""The dashboard's numbers and its two renderings, from component statuses.

Statuses here are written as ``Component.summary()`` dicts (what the components write to
their ``--summary-json`` files) and read as the model; the integration tests check real ones.
"""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from framepipe.ops.dashboard import (
    RunMonitor,
    progress,
    read_status_dir,
    render,
    render_text,
    stage_rows,
)
from framepipe.ops.status import as_statuses
from framepipe.runtime.status import ComponentStatus

MB = 1_000_000


def snapshot(t: float, n: int, *, workers_alive: int = 2) -> list[ComponentStatus]:
    """A five-stage pipeline after ``t`` seconds with ``n`` frames through every stage (1 MB each)."""
    return [ComponentStatus.from_summary(s) for s in summaries(t, n, workers_alive=workers_alive)]


def summaries(t: float, n: int, *, workers_alive: int = 2) -> list[dict[str, Any]]:
    """:func:`snapshot` as the components' summary files have it."""
    common = {"uptime_s": t, "first_ns": 1_000_000_000, "last_ns": 1_000_000_000 + int(t * 1e9), "rejected": 0}
    return [
        {"component": "publisher", "role": "publisher", "published": n, "acquired": n, "bytes": n * MB, **common},
        {
            "component": "ventilator",
            "role": "ventilator",
            "accepted": n,
            "bytes": n * MB,
            "in_flight": 5,
            "window": 16,
            "queued": 1,
            "source_gaps": 0,
            **common,
        },
        {"component": "worker-a", "role": "worker", "processed": n // 2, "bytes": n // 2 * MB, **common},
        {"component": "worker-b", "role": "worker", "processed": n - n // 2, "bytes": (n - n // 2) * MB, **common},
        {
            "component": "sink",
            "role": "sink",
            "received": n,
            "bytes": n * MB,
            "workers_alive": workers_alive,
            "workers_lost": [] if workers_alive == 2 else ["worker-b"],
            **common,
        },
        {
            "component": "recorder-frames",
            "role": "recorder",
            "written": n,
            "bytes": n * MB,
            "gaps": 3,
            "path": "data/run_frames.h5",
            "file_bytes": 42 * MB,
            **{**common, "rejected": 2},
        },
    ]


def test_rates_come_from_the_change_between_two_snapshots() -> None:
    rows = {r.component: r for r in stage_rows(snapshot(12.0, 400), snapshot(10.0, 300))}
    assert rows["publisher"].frames == 400
    assert rows["publisher"].frames_per_s == pytest.approx(50.0)  # 100 frames in 2 s
    assert rows["publisher"].mb_per_s == pytest.approx(50.0)
    assert rows["ventilator"].queue == "in flight 5/16, queued 1"
    assert rows["recorder-frames"].drops == 3 and rows["recorder-frames"].rejects == 2
    assert rows["recorder-frames"].notes == "42.0 MB data/run_frames.h5"


def test_without_a_previous_snapshot_rates_are_the_lifetime_average() -> None:
    rows = {r.component: r for r in stage_rows(snapshot(10.0, 501))}
    assert rows["sink"].frames_per_s == pytest.approx(50.0)  # 500 intervals in 10 s


def test_workers_are_summed_then_listed_and_losses_named() -> None:
    rows = stage_rows(snapshot(12.0, 400, workers_alive=1), snapshot(10.0, 300))
    stages = [r.stage for r in rows]
    assert stages == ["publisher", "ventilator", "workers", "", "", "sink", "recorder"]
    total = rows[2]
    assert total.frames == 400 and total.frames_per_s == pytest.approx(50.0)
    assert total.component == "2 started, 1 alive" and "lost: worker-b" in total.notes
    assert [r.component for r in rows[3:5]] == ["worker-a", "worker-b"] and all(r.indent for r in rows[3:5])


def test_progress_and_eta_of_a_finite_run() -> None:
    prog = progress(snapshot(12.0, 400), 1000, snapshot(10.0, 300))
    assert (prog.done, prog.total, prog.fraction) == (400, 1000, 0.4)
    assert prog.eta_s == pytest.approx(12.0)  # 600 frames to go at 50/s
    endless = progress(snapshot(12.0, 400), None)
    assert endless.fraction is None and endless.eta_s is None


def test_plain_line_has_progress_rates_queue_and_drops() -> None:
    line = render_text(snapshot(12.0, 400), snapshot(10.0, 300), total=1000)
    assert "\n" not in line
    assert line.startswith("400/1000 frames (40%), ETA 00:12")
    assert "publisher 400 @ 50.0/s 50.0 MB/s" in line
    assert "[in flight 5/16, queued 1]" in line
    assert "recorder-frames 400 @ 50.0/s 50.0 MB/s drops 3 rejects 2" in line
    assert render_text([]) == "waiting for components…"


def test_rich_dashboard_shows_every_stage_a_progress_bar_and_the_log_tail() -> None:
    console = Console(file=io.StringIO(), width=160, record=True, color_system=None)
    console.print(
        render(
            snapshot(12.0, 400),
            snapshot(10.0, 300),
            title="framepipe run 'lab'",
            total=1000,
            elapsed_s=12.0,
            log_tail=["09:00:01 recorder-frames WARNING frames: 3 message(s) missed before seq 7"],
        )
    )
    text = console.export_text()
    assert "framepipe run 'lab'  00:12" in text
    assert "400/1000 frames   40%  ETA 00:12" in text
    assert "━" in text  # the bar
    for header in ("frames/s", "MB/s", "queue / in flight", "drops", "rejects"):
        assert header in text
    for name in ("publisher", "ventilator", "2 started, 2 alive", "worker-a", "sink", "recorder-frames"):
        assert name in text
    assert "missed before seq 7" in text


def test_status_files_are_read_and_half_written_ones_ignored(tmp_path: Path) -> None:
    (tmp_path / "sink.json").write_text(json.dumps(summaries(1.0, 10)[4]))
    (tmp_path / "publisher.json").write_text('{"component": "publ')  # a writer that died mid-write
    (tmp_path / "worker.json.tmp").write_text("{}")
    assert [s.name for s in read_status_dir(tmp_path)] == ["sink"]


def test_monitor_falls_back_to_plain_lines_without_a_terminal_or_rich(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for status in summaries(2.0, 20):
        (tmp_path / f"{status['component']}.json").write_text(json.dumps(status))
    # stdout is not a terminal under pytest: plain, even when the dashboard is asked for
    monitor = RunMonitor(tmp_path, title="t", total=40, log_path=tmp_path / "run.log", tui=True)
    assert not monitor.tui and monitor.child_output is None
    with caplog.at_level("INFO", logger="framepipe.run"), monitor:
        pass
    assert any(r.getMessage().startswith("progress: 20/40 frames (50%)") for r in caplog.records)
    # and without rich installed (the `ui` extra), even on a terminal
    for name in [m for m in sys.modules if m == "rich" or m.startswith("rich.")]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: ImportError on import
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert not RunMonitor(tmp_path, title="t", total=40, log_path=tmp_path / "run.log").tui
    with pytest.raises(ImportError, match=r"framepipe\[ui\]"):
        render(snapshot(2.0, 20))


def test_status_endpoint_answers_render_like_summaries_and_down_is_said() -> None:
    from framepipe.config import Config
    from framepipe.ventilator import Ventilator

    vent = Ventilator(Config())  # opens nothing: its status is its summary and live parts
    vent.counters.update(accepted=7, bytes=7 * MB)
    answers = [
        vent.current_status({}).to_reply(),
        {"name": "sink", "role": "sink", "url": "tcp://10.0.0.2:5574", "state": "down", "error": "no answer"},
    ]
    flat = as_statuses(answers)
    rows = {r.component: r for r in stage_rows(flat)}
    assert rows["ventilator"].frames == 7 and rows["ventilator"].queue == "in flight 0/16, queued 0"
    assert rows["sink"].frames is None and rows["sink"].notes == "DOWN: no answer"


def test_launcher_lines_go_to_the_log_file_while_the_dashboard_is_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The dashboard owns the terminal: the launcher's own lines (logger "framepipe.run") join the
    children's in the log file, and its warnings show under the table from there."""
    import logging

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    log_path = tmp_path / "run.log"
    run_log = logging.getLogger("framepipe.run")
    with RunMonitor(tmp_path, title="t", total=10, log_path=log_path) as monitor:
        assert monitor.tui
        run_log.warning("run over: stopping worker-1")
    _, err = capfd.readouterr()
    assert "run over: stopping worker-1" in log_path.read_text()
    assert "run over" not in err, "not on the terminal under the dashboard"
    assert run_log.propagate and not [h for h in run_log.handlers if isinstance(h, logging.FileHandler)]


def _wide_snapshot() -> tuple[list[ComponentStatus], list[ComponentStatus]]:
    now, before = snapshot(12.0, 400), snapshot(10.0, 300)
    for s in now + before:
        if s.role == "recorder":
            s.counters["path"] = "data/local_20261203T054757Z_0001_local_frames.h5"
        if s.role == "ventilator":
            s.counters.update(in_flight=16, queued=0)
    return now, before


@pytest.mark.parametrize("width", [100, 160])
def test_the_dashboard_fits_the_terminal_without_cutting_a_word(width: int) -> None:
    now, before = _wide_snapshot()
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(render(now, before, title="framepipe run 'local'", total=1000, width=width))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    text = "\n".join(lines)
    assert "…" not in text, "nothing cut short"
    for word in ("publisher", "ventilator", "2 started, 2 alive", "worker-a", "acquired 400", "duplicates 0"):
        assert word in text, word
    assert "local_20261203T054757Z_0001_local_frames.h5" in text, "the file's name whole"
    # the stage column names each component once: no "publisher  publisher"
    assert not re.search(r"^(publisher|ventilator|sink)\s+\1\b", text, re.M)
    header = next(line for line in lines if line.startswith("stage"))
    if width == 160:
        assert all(h in header for h in ("frames/s", "MB/s", "queue / in flight", "drops", "rejects"))
        assert "in flight 16/16, queued 0" in text
    else:  # the least useful columns went, not the words
        assert "MB/s" not in header and "frames/s" in header and "notes" in header


def test_columns_of_zeros_go_first_then_the_implied_figures() -> None:
    from framepipe.ops.dashboard import _cells, columns_that_fit

    now, before = _wide_snapshot()
    for s in now:
        s.counters.update(gaps=0, rejected=0)
    cells = [_cells(r) for r in stage_rows(now, before)]
    assert columns_that_fit(cells, None) == columns_that_fit(cells, 400)
    narrow = columns_that_fit(cells, 100)
    assert "rejects" not in narrow and "drops" not in narrow and {"stage", "frames", "notes"} <= set(narrow)


def test_the_run_log_gets_a_separator_with_date_and_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    log_path = tmp_path / "local.log"
    log_path.write_text("09:00:00 sink INFO an earlier run\n")
    with RunMonitor(tmp_path, title="framepipe run 'local'", total=10, log_path=log_path, run_id="20261203T060902Z"):
        pass
    text = log_path.read_text()
    assert text.startswith("09:00:00 sink INFO an earlier run\n")
    assert re.search(
        r"^──── \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · framepipe run 'local' · run id 20261203T060902Z ────$", text, re.M
    )
