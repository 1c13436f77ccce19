"""Logging set-up shared by every component: one format, optional JSON, rate-limited warnings."""

from __future__ import annotations

import json
import logging
import sys
import time


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "t": record.created,
                "component": record.name,
                "level": record.levelname.lower(),
                "msg": record.getMessage(),
            }
        )


def setup_logging(level: str = "info", *, json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)-18s %(levelname)-7s %(message)s", "%H:%M:%S"))
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
