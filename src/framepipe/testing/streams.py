"""A test-side subscriber of a framepipe broadcast stream, with plain pyzmq and json.

Tests use it to watch progress (how many distinct frame ids went by) and to see every
message the stream carried, independently of framepipe's own subscriber code.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any

import zmq


class StreamWatcher:
    """SUB to a stream's PUB port; counts frame ids as they pass."""

    def __init__(self, url: str, *, rcvhwm: int = 100_000):
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, rcvhwm)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(url)
        self.ids: collections.Counter[int] = collections.Counter()
        #: monotonic time each frame id was first seen
        self.arrivals: dict[int, float] = {}
        self.eos: dict[str, Any] | None = None

    def pump(self, timeout_ms: int = 50) -> int:
        """Read whatever arrived (waiting up to ``timeout_ms`` for the first); return how many."""
        n = 0
        if not self.sub.poll(timeout_ms):
            return 0
        while True:
            try:
                parts = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return n
            header = json.loads(parts[0])
            if header.get("kind") == "eos":
                self.eos = header
            elif header.get("kind") == "slot":
                continue  # a same-host ring reader's descriptor: the data comes as a result too
            elif "frame_id" in header:
                self.ids[header["frame_id"]] += 1
                self.arrivals.setdefault(header["frame_id"], time.monotonic())
                n += 1

    def wait_distinct(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ids) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.ids)} distinct ids of {count} within {timeout} s")
            self.pump()

    def close(self) -> None:
        self.sub.close(linger=0)
        self.ctx.term()


def read_json(path: Any) -> dict[str, Any]:
    with open(path) as fh:
        return dict(json.load(fh))
