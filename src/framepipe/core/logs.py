"""Logging set-up shared by every component: one format, optional JSON, rate-limited warnings."""

from __future__ import annotations

import json
import logging
import sys
import time

#: every framepipe logger is named ``framepipe.<component name>`` (``framepipe.sink``,
#: ``framepipe.worker-0``, ``framepipe.run`` for the launcher): one tree, one level switch
LOGGER_PREFIX = "framepipe."


def component_of(record: logging.LogRecord) -> str:
    """The component a log line is from, as operators name it: the logger name without
    the ``framepipe.`` every one of them shares (``sink``, ``worker-0``, ``run``)."""
    return record.name.removeprefix(LOGGER_PREFIX)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(component)-18s %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.__dict__["component"] = component_of(record)
        return super().format(record)


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``component``, ``level``, ``event``, ``message``,
    then the line's figures as fields of their own (``extra={"fields": {...}}``), so a log
    collector filters on ``written`` or ``missing`` without parsing the sentence."""

    #: keys of the object that a line's fields never replace
    CORE = ("time", "component", "level", "event", "message")

    def format(self, record: logging.LogRecord) -> str:
        import datetime as dt

        out: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "component": component_of(record),
            "level": record.levelname.lower(),
            # the event: given by the line, else its template (the same for every line of a kind)
            "event": getattr(record, "event", None) or str(record.msg),
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in self.CORE:
                    out[str(key)] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """One handler on stderr for the whole process: plain lines, or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_lines else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class RateLimitedLog:
    """Logs at most one warning per ``interval_s`` per key, with the count of those held back."""

    def __init__(self, log: logging.Logger, interval_s: float = 1.0):
        self.log = log
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.interval_s:
            held = self._held.pop(key, 0)
            suffix = f" (+{held} similar since last report)" if held else ""
            self.log.warning(msg + suffix, *args)
            self._last[key] = now
        else:
            self._held[key] = self._held.get(key, 0) + 1
