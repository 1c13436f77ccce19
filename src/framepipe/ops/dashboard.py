"""What operators see while a pipeline runs: a live terminal dashboard, or plain log lines.

The input is a list of :class:`~framepipe.runtime.status.ComponentStatus` (name, role,
``uptime_s``, counters such as ``published`` / ``processed`` / ``written`` and ``bytes``,
plus each role's live figures and parts). Where they come from does not matter: ``framepipe
run`` reads the ``--summary-json`` files its children rewrite every half second
(:func:`read_status_dir`); ``framepipe status --watch`` passes what the status endpoints
answer. Both are the same model.

- :func:`stage_rows`: the numbers per stage (pure; rates from two snapshots).
- :func:`render`: a rich renderable (table + progress bar with ETA); needs the ``ui``
  extra (``pip install 'framepipe[ui]'``).
- :func:`render_text`: the same in one plain line, for logs, pipes and CI.
- :class:`RunMonitor`: drives either one for ``framepipe run``; :func:`watch_live` drives
  the dashboard for ``framepipe status --watch``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from framepipe.core.counters import Count
from framepipe.ops.status import as_statuses
from framepipe.runtime.status import THROUGHPUT, ComponentStatus, Observed, Role

log = logging.getLogger("framepipe.run")

#: stage order on screen: the way frames flow
ORDER = tuple(Role)
#: the dashboard redraws this often; plain mode logs a line this often
REFRESH_S = 0.5
PLAIN_EVERY_S = 2.0
#: warning and error lines of the children shown under the table
LOG_TAIL = 6

Status = ComponentStatus


@dataclasses.dataclass
class StageRow:
    """One line of the dashboard."""

    stage: str
    component: str
    frames: int | None
    frames_per_s: float | None
    mb_per_s: float | None
    queue: str = ""
    drops: int = 0
    rejects: int = 0
    notes: str = ""
    indent: bool = False


@dataclasses.dataclass
class Progress:
    """Where a finite run is: frames done of total, at what rate, how long to go."""

    done: int
    total: int | None
    frames_per_s: float | None

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.done / self.total)

    @property
    def eta_s(self) -> float | None:
        if not self.total or not self.frames_per_s or self.frames_per_s <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.frames_per_s)


# ---------------------------------------------------------------------------- numbers


def _by_name(statuses: Iterable[Status] | None) -> dict[str, Status]:
    return {s.name: s for s in statuses or ()}


def _rates(now: Status, before: Status | None) -> tuple[int | None, float | None, float | None]:
    """(frames, frames/s, MB/s): from the change since ``before`` when there is one,
    else the component's lifetime average (first to last frame)."""
    key = THROUGHPUT.get(now.role, "")
    frames = now.count(key)
    if frames is None:
        return None, None, None
    if before is not None:
        dt = (now.uptime_s or 0.0) - (before.uptime_s or 0.0)
        if dt > 0:
            df = frames - (before.count(key) or 0)
            db = (now.count(Count.BYTES) or 0) - (before.count(Count.BYTES) or 0)
            if df >= 0 and db >= 0:
                return frames, df / dt, db / dt / 1e6
    fps = now.lifetime_rate(key) if frames > 1 else None
    if fps is not None:
        return frames, fps, (now.count(Count.BYTES) or 0) / frames * fps / 1e6
    return frames, None, None


def _size(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError  # pragma: no cover


def _window(s: Status) -> tuple[int, int] | None:
    """(in flight, queued) of a ventilator: its queue part, else its live figures."""
    if s.queue is not None and s.queue.in_flight is not None:
        return s.queue.in_flight, s.queue.waiting or 0
    in_flight = s.count(Count.IN_FLIGHT)
    return None if in_flight is None else (in_flight, s.count(Count.QUEUED) or 0)


def _wire_note(c: dict[str, Any]) -> str:
    """``, wire bitshuffle-lz4 ×1.63`` when frames travel compressed: what the link carries."""
    encoding, ratio = c.get(Count.WIRE_ENCODING), c.get(Count.WIRE_RATIO)
    if not encoding or encoding == "none":
        return ""
    return f", wire {encoding}" + (f" ×{ratio:.2f}" if isinstance(ratio, (int, float)) else "")


def _row(s: Status, before: Status | None, stage: str) -> StageRow:
    frames, fps, mbps = _rates(s, before)
    c = s.counters
    row = StageRow(stage, s.name, frames, fps, mbps, rejects=s.count(Count.REJECTED) or 0)
    if s.state in (Observed.DOWN, Observed.LOST):
        row.notes = s.state.upper() + (f": {s.error}" if s.error else "")
        return row
    if s.role == Role.PUBLISHER:
        row.queue = f"blocked {s.count(Count.BLOCKED_MS)} ms" if s.count(Count.BLOCKED_MS) else ""
        row.notes = f"acquired {c.get(Count.ACQUIRED, 0)}"
        if s.count(Count.CAMERA_LOST):
            row.drops = s.count(Count.CAMERA_LOST) or 0
            row.notes += f", camera lost {row.drops}"
        row.notes += _wire_note(c)
    elif s.role == Role.VENTILATOR:
        window = _window(s)
        if window is not None:
            row.queue = f"in flight {window[0]}/{c.get(Count.WINDOW, '?')}, queued {window[1]}"
        row.drops = s.count(Count.SOURCE_GAPS) or 0
        row.notes = f"acked {c.get(Count.ACKNOWLEDGED, 0)}, re-sent {c.get(Count.REDISPATCHED, 0)}"
    elif s.role == Role.SINK:
        row.notes = f"duplicates {c.get(Count.DUPLICATES, 0)}"
        if c.get(Count.MISSING) and c.get(Count.EXPECTED) is not None:  # before the end, holes are just late
            row.notes += f", missing {c[Count.MISSING]}"
        lat = c.get(Count.LATENCY_MS)
        if isinstance(lat, dict) and "p50" in lat:
            row.notes += f", latency p50 {lat['p50']:.0f} ms"
    elif s.role == Role.RECORDER:
        row.drops = s.count(Count.GAPS) or 0
        path = c.get(Count.PATH)
        if path:
            size = s.count(Count.FILE_BYTES)
            # size first: on a narrow terminal the end of a long path is what gets cut
            row.notes = (f"{_size(size)} " if size is not None else "") + str(path)
        row.notes = (_wire_note(c).lstrip(", ") + " " + row.notes).strip()
    elif s.role == Role.VIEWER:
        streams = c.get(Count.STREAMS) or {}
        row.drops = sum(int(v.get("dropped", 0) or 0) for v in streams.values() if isinstance(v, dict))
    return row


def stage_rows(statuses: Sequence[Status], previous: Sequence[Status] | None = None) -> list[StageRow]:
    """The dashboard's rows: one per stage in flow order; workers summed, then one row each."""
    now, before = _by_name(statuses), _by_name(previous)
    rows: list[StageRow] = []
    workers = sorted((s for s in now.values() if s.role == Role.WORKER), key=lambda s: s.name)
    sinks = [s for s in now.values() if s.role == Role.SINK]
    for role in ORDER:
        if role == Role.WORKER:
            if not workers:
                continue
            each = [_row(w, before.get(w.name), "") for w in workers]
            # a worker known only from the sink's heartbeats (status endpoints): the sink's count
            per_worker = sinks[0].counters.get(Count.PER_WORKER) if sinks else None
            for r in each:
                if r.frames is None and isinstance(per_worker, dict) and r.component in per_worker:
                    r.frames = int(per_worker[r.component])
            alive = sinks[0].count(Count.WORKERS_ALIVE) if sinks else None
            lost = sinks[0].counters.get(Count.WORKERS_LOST) if sinks else None
            total = StageRow(
                "workers",
                f"{len(workers)} started" + (f", {alive} alive" if isinstance(alive, int) else ""),
                sum(r.frames or 0 for r in each) if any(r.frames is not None for r in each) else None,
                sum(r.frames_per_s or 0.0 for r in each) if any(r.frames_per_s for r in each) else None,
                sum(r.mb_per_s or 0.0 for r in each) if any(r.mb_per_s for r in each) else None,
                rejects=sum(r.rejects for r in each),
                notes=f"lost: {', '.join(lost)}" if isinstance(lost, list) and lost else "",
            )
            rows.append(total)
            if len(each) <= 8:  # beyond that the table would scroll: the total says it
                for r in each:
                    r.indent = True
                rows.extend(each)
            continue
        for s in sorted(now.values(), key=lambda s: s.name):
            if s.role == role:
                rows.append(_row(s, before.get(s.name), role))
    known = set(ORDER)
    for s in now.values():
        if s.role not in known:
            rows.append(_row(s, before.get(s.name), s.role))
    return rows


def progress(statuses: Sequence[Status], total: int | None, previous: Sequence[Status] | None = None) -> Progress:
    """Frames fully processed (the sink's count; the publisher's without a sink) of ``total``."""
    now, before = _by_name(statuses), _by_name(previous)
    for role in (Role.SINK, Role.RECORDER, Role.PUBLISHER, Role.VENTILATOR):
        found = [s for s in now.values() if s.role == role]
        if found:
            s = found[0]
            frames, fps, _ = _rates(s, before.get(s.name))
            return Progress(frames or 0, total, fps)
    return Progress(0, total, None)


# ---------------------------------------------------------------------------- rendering


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    h, rem = divmod(round(seconds), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


def render_text(
    statuses: Sequence[Status],
    previous: Sequence[Status] | None = None,
    *,
    total: int | None = None,
) -> str:
    """One plain line: progress, then per stage frames and rates, drops and rejects."""
    prog = progress(statuses, total, previous)
    parts = []
    if prog.total:
        parts.append(f"{prog.done}/{prog.total} frames ({100 * (prog.fraction or 0):.0f}%), ETA {_clock(prog.eta_s)}")
    for row in stage_rows(statuses, previous):
        if row.indent:
            continue
        name = row.component if row.stage == "recorder" else row.stage
        text = f"{name} {_num(row.frames, '{}')}"
        if row.frames_per_s is not None:
            text += f" @ {row.frames_per_s:.1f}/s {_num(row.mb_per_s)} MB/s"
        if row.queue:
            text += f" [{row.queue}]"
        if row.stage == "workers":
            text += f" [{row.component}]"
        if row.drops:
            text += f" drops {row.drops}"
        if row.rejects:
            text += f" rejects {row.rejects}"
        parts.append(text)
    return " · ".join(parts) if parts else "waiting for components…"


#: the dashboard's columns, left to right, and how each is justified
COLUMNS = (
    ("stage", "left"),
    ("frames", "right"),
    ("frames/s", "right"),
    ("MB/s", "right"),
    ("queue / in flight", "left"),
    ("drops", "right"),
    ("rejects", "right"),
    ("notes", "left"),
)
#: on a narrow terminal, the order in which columns go: a column of zeros first, then the
#: figures that another column implies (MB/s: frames/s × frame size); never stage, frames
#: or notes
DROP_ORDER = ("rejects:zero", "drops:zero", "MB/s", "queue / in flight", "rejects", "drops", "frames/s")
#: the notes column keeps at least this many characters (it wraps at spaces beyond)
NOTES_MIN = 30
#: between two columns (rich's padding of one space each side)
GAP = 2


def _cells(row: StageRow) -> tuple[StageRow, dict[str, str]]:
    """A row's text per column. The stage is the component's name (its stage is what the
    flow order says); the workers' total says how many in its notes."""
    if row.indent:
        stage = "  " + row.component
    elif row.stage == "workers":
        stage = "workers"
    else:
        stage = row.component
    notes = row.notes
    if row.stage == "workers":
        notes = ", ".join(part for part in (row.component, row.notes) if part)
    text = {
        "stage": stage,
        "frames": _num(row.frames, "{}"),
        "frames/s": _num(row.frames_per_s),
        "MB/s": _num(row.mb_per_s),
        "queue / in flight": row.queue,
        "drops": str(row.drops),
        "rejects": str(row.rejects),
        "notes": notes,
    }
    return row, text


def _needed(cells: Sequence[tuple[StageRow, dict[str, str]]], shown: Sequence[str], *, whole: bool = False) -> int:
    """Characters the table needs with these columns: the notes at their longest (``whole``)
    or wrapped at spaces to :data:`NOTES_MIN`, but never narrower than their longest word."""
    total = 0
    for name in shown:
        cell = max((len(text[name]) for _, text in cells), default=0)
        if name == "notes" and not whole:
            longest_word = max((len(w) for _, text in cells for w in text["notes"].split(" ")), default=0)
            cell = max(min(cell, NOTES_MIN), longest_word)
        total += max(len(name), cell)
    return total + GAP * (len(shown) - 1)


def columns_that_fit(cells: Sequence[tuple[StageRow, dict[str, str]]], width: int | None) -> list[str]:
    """The columns to show in ``width`` characters: all of them when they fit (or no width
    is known), else without the least useful ones (:data:`DROP_ORDER`) until every word of
    every cell fits whole."""
    names = [name for name, _ in COLUMNS]
    if width is None:
        return names
    for drop in DROP_ORDER:
        if _needed(cells, names) <= width:
            break
        name, _, only_if = drop.partition(":")
        if name not in names:
            continue
        if only_if == "zero" and any(text[name] != "0" for _, text in cells):
            continue
        names.remove(name)
    return names


def rich_available() -> bool:
    """True when the ``ui`` extra (rich) is installed."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def render(
    statuses: Sequence[Status],
    previous: Sequence[Status] | None = None,
    *,
    title: str = "framepipe",
    total: int | None = None,
    elapsed_s: float | None = None,
    log_tail: Sequence[str] = (),
    width: int | None = None,
) -> Any:
    """The dashboard as a rich renderable (print it, or hand it to ``rich.live.Live``).

    ``width``: the terminal's columns; the least useful columns are left out until the
    table fits (:func:`columns_that_fit`), and no word is cut. Needs the ``ui`` extra;
    without it, use :func:`render_text`.
    """
    try:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text
    except ImportError as e:
        raise ImportError("the live dashboard needs the 'ui' extra: pip install 'framepipe[ui]'") from e

    head = Text(title, style="bold")
    if elapsed_s is not None:
        head.append(f"  {_clock(elapsed_s)}", style="dim")
    parts: list[Any] = [head]
    prog = progress(statuses, total, previous)
    if prog.total:
        line = Table.grid(padding=(0, 1))
        line.add_column(width=40)
        line.add_column()
        line.add_row(
            ProgressBar(total=prog.total, completed=min(prog.done, prog.total), width=40),
            Text(
                f"{prog.done}/{prog.total} frames  {100 * (prog.fraction or 0):3.0f}%  ETA {_clock(prog.eta_s)}",
                style="cyan",
            ),
        )
        parts.append(line)
    table = Table(box=None, header_style="bold", pad_edge=False, expand=False)
    cells = [_cells(row) for row in stage_rows(statuses, previous)]
    if width is not None and _needed(cells, [name for name, _ in COLUMNS], whole=True) > width:
        # a file path would wrap: its name says which file (data_dir is in the run's summary)
        for _, text in cells:
            text["notes"] = " ".join(word.rsplit("/", 1)[-1] for word in text["notes"].split(" "))
    shown = columns_that_fit(cells, width)
    for name, justify in COLUMNS:
        if name in shown:
            # the notes wrap at spaces when long; every other column keeps its words whole
            wraps = name == "notes"
            table.add_column(name, justify=justify, no_wrap=not wraps, overflow="fold")  # type: ignore[arg-type]
    for row, text in cells:
        values: list[Any] = []
        for name, _ in COLUMNS:
            if name not in shown:
                continue
            if name == "drops":
                values.append(Text(text[name], style="yellow" if row.drops else "dim"))
            elif name == "rejects":
                values.append(Text(text[name], style="red" if row.rejects else "dim"))
            else:
                values.append(text[name])
        table.add_row(*values, style="dim" if row.indent else None)
    parts.append(table)
    for line_text in log_tail:
        parts.append(Text(line_text, style="red" if " ERROR " in line_text else "yellow", overflow="ellipsis"))
    return Group(*parts)


# ---------------------------------------------------------------------------- framepipe status --watch


def watch_live(rounds: Iterable[list[dict[str, Any]]], *, title: str) -> list[dict[str, Any]]:
    """Show each round of status answers (``ops.status.watch``) on the live dashboard until
    the rounds end (or Ctrl-C); returns the last round."""
    from rich.live import Live

    last: list[dict[str, Any]] = []
    previous: list[Status] | None = None
    with Live(render([], title=title), refresh_per_second=4) as live:
        for statuses in rounds:
            flat = as_statuses(statuses)
            down = sum(1 for s in flat if s.state == Observed.DOWN)
            heading = f"{title}  ({len(flat)} component(s){f', {down} DOWN' if down else ''})"
            live.update(render(flat, previous, title=heading, width=live.console.width))
            previous, last = flat, statuses
    return last


# ---------------------------------------------------------------------------- framepipe run


def read_summary(path: str | os.PathLike[str]) -> Status | None:
    """A component's ``--summary-json`` file as its status; None when missing or unreadable
    (half-written ones are never seen: components write a temp file and rename it)."""
    try:
        data = json.loads(Path(path).read_text())
        return ComponentStatus.from_summary(data) if isinstance(data, dict) else None
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def read_status_dir(directory: str | os.PathLike[str]) -> list[Status]:
    """Every ``*.json`` summary file in ``directory`` that can be read (see :func:`read_summary`)."""
    found = (read_summary(path) for path in sorted(Path(directory).glob("*.json")))
    return [s for s in found if s is not None]


def run_separator(title: str, run_id: str, now: float | None = None) -> str:
    """The line that opens a run in the run log: ``──── 2026-12-03 06:09:02 UTC · framepipe
    run 'local' · run id 20261203T060902Z ────``."""
    import datetime as dt

    when = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [when, title] + ([f"run id {run_id}"] if run_id else [])
    return f"\n──── {' · '.join(parts)} ────"


class RunMonitor:
    """Shows a running ``framepipe run``: the live dashboard on a terminal, plain lines elsewhere.

    The dashboard is used when ``tui`` is true, stdout is a terminal and rich is installed.
    Then the children's log lines would scribble over it, so they go to ``log_path``
    (see :attr:`child_output`) and their warnings and errors are shown under the table;
    so do the launcher's own (the ``run`` logger), for the same reason.
    """

    def __init__(
        self,
        status_dir: str | os.PathLike[str],
        *,
        title: str,
        total: int | None,
        log_path: str | os.PathLike[str],
        tui: bool = True,
        run_id: str = "",
    ):
        self.status_dir = Path(status_dir)
        self.run_id = run_id
        self.title = title
        self.total = total or None
        self.log_path = Path(log_path)
        self.tui = tui and sys.stdout.isatty() and rich_available()
        self.child_output: Any = None
        self._live: Any = None
        self._console: Any = None
        self._previous: list[Status] | None = None
        self._last: list[Status] = []
        self._history: collections.deque[tuple[float, list[Status]]] = collections.deque(maxlen=8)
        self._t0 = time.monotonic()
        self._next = 0.0
        self._next_plain = time.monotonic() + PLAIN_EVERY_S
        self._log_offset = 0
        self._tail: list[str] = []
        self._run_log_handler: logging.Handler | None = None

    def __enter__(self) -> RunMonitor:
        if self.tui:
            from rich.console import Console
            from rich.live import Live

            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.child_output = open(self.log_path, "ab")  # closed in __exit__
            # one log file collects run after run: each starts with a line that says which
            self.child_output.write(run_separator(self.title, self.run_id).encode() + b"\n")
            self.child_output.flush()
            self._log_offset = self.log_path.stat().st_size
            # the launcher's own lines ("run over: stopping worker-1") into the file too
            handler = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
            root_handlers = logging.getLogger().handlers
            if root_handlers and root_handlers[0].formatter is not None:
                handler.setFormatter(root_handlers[0].formatter)
            log.addHandler(handler)
            log.propagate = False
            self._run_log_handler = handler
            self._console = Console()
            self._live = Live(self._renderable([]), console=self._console, refresh_per_second=4, redirect_stderr=False)
            self._live.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.tick(force=True, final=True)
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None
        if self._run_log_handler is not None:
            log.removeHandler(self._run_log_handler)
            log.propagate = True
            self._run_log_handler.close()
            self._run_log_handler = None
        if self.child_output is not None:
            self.child_output.close()
            self.child_output = None
            print(f"  logs of every component: {self.log_path}")

    def _renderable(self, statuses: list[Status]) -> Any:
        return render(
            statuses,
            self._previous,
            title=self.title,
            total=self.total,
            elapsed_s=time.monotonic() - self._t0,
            log_tail=self._tail,
            width=self._console.width if self._console is not None else None,
        )

    def _read_log(self) -> None:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                chunk = fh.read(1 << 20)
        except OSError:
            return
        # only whole lines; a half-written one is read next time
        end = chunk.rfind(b"\n") + 1
        self._log_offset += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            if " WARNING " in line or " ERROR " in line or "error:" in line:
                self._tail = [*self._tail, line.strip()][-LOG_TAIL:]

    def tick(self, force: bool = False, final: bool = False) -> None:
        """Called often by the launcher's wait loop; redraws or logs when due.

        ``final``: every component has written its last summary; rates are then each
        component's average from its first frame to its last, not the last second's.
        """
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + REFRESH_S
        statuses = read_status_dir(self.status_dir)
        if statuses:
            # rates over a second or more: half-second snapshots of a busy machine are jumpy
            self._history.append((now, statuses))
            older = [snapshot for t, snapshot in self._history if now - t >= 1.0]
            self._previous = older[-1] if older and not final else None
            self._last = statuses
        if self._live is not None:
            self._read_log()
            self._live.update(self._renderable(self._last))
        elif now >= self._next_plain or force:
            self._next_plain = now + PLAIN_EVERY_S
            if self._last:
                prog = progress(self._last, self.total, self._previous)
                log.info(
                    "progress: %s",
                    render_text(self._last, self._previous, total=self.total),
                    extra={"event": "progress", "fields": {"frames": prog.done, "total": prog.total}},
                )
