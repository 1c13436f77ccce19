"""One message can't crash or exhaust a component: its status thread, its socket limits,
its reject log. In-process, real sockets on loopback (the whole pipeline under the same
attack is tests/integration/test_fuzz.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from framepipe.config import Config
from framepipe.core.counters import Count
from framepipe.core.errors import ProtocolError
from framepipe.runtime import status as status_module
from framepipe.runtime.component import Component
from framepipe.runtime.status import StatusParts
from framepipe.testing.ports import free_ports
from framepipe.wire.protocol import MAX_HEADER_BYTES


class Target(Component):
    """A component with only a status endpoint, whose status parts can be made to fail."""

    role = "sink"

    def __init__(self, port: int):
        super().__init__(Config.model_validate({"sink": {"status_port": port}, "limits": {"max_message_mb": 1}}))
        self.fail_parts: BaseException | None = None

    def status_parts(self) -> StatusParts:
        if self.fail_parts is not None:
            raise self.fail_parts
        return StatusParts()


@pytest.fixture
def target() -> Iterator[tuple[Target, str]]:
    port = free_ports(1)[0]
    comp = Target(port)
    comp.ready()
    try:
        yield comp, f"tcp://127.0.0.1:{port}"
    finally:
        comp.close()


def _ask(ctx: zmq.Context[Any], url: str, *frames: bytes, timeout_ms: int = 5000) -> dict[str, Any] | None:
    """One request on a fresh REQ socket; its JSON answer, or None if none came in time."""
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(url)
        sock.send_multipart(list(frames))
        if not sock.poll(timeout_ms):
            return None
        answer: dict[str, Any] = json.loads(sock.recv_multipart()[-1])
        return answer
    finally:
        sock.close(0)


STATUS = json.dumps({"v": 1, "kind": "status", "cmd": "status"}).encode()


def _disconnected(ctx: zmq.Context[Any], url: str, frames: list[bytes], timeout_ms: int = 10_000) -> bool:
    """Send ``frames`` from a DEALER and say whether the peer dropped the connection."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        sock.connect(url)
        sock.send_multipart(frames)
        while monitor.poll(timeout_ms):
            event = monitor.recv_multipart()
            if int.from_bytes(event[0][:2], "little") == zmq.EVENT_DISCONNECTED:
                return True
        return False
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def test_the_status_thread_survives_hostile_requests(
    target: tuple[Target, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    comp, url = target
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        hostile: list[tuple[bytes, ...]] = [
            (b"[" * 5000 + b"]" * 5000,),  # 10 KB of nesting: a RecursionError in json.loads
            (b'{"v":1,"kind":"status","cmd":"status","x":' + b"[" * 9000 + b"}",),
            (b'{"v":1,"kind":"status","cmd":NaN}',),
            (b"\xff\xfe\x00garbage",),
            (STATUS, b"a payload"),  # wrong framing: a control message with two frames
        ]
        for frames in hostile:
            answer = _ask(ctx, url, *frames)
            assert answer is not None and answer["ok"] is False and answer["kind"] == "error", (frames[0][:40], answer)
        # no REQ envelope: nobody to answer, dropped and counted
        raw.connect(url)
        raw.send_multipart([STATUS])
        # a request larger than any request: the connection is dropped before it is read
        assert _disconnected(ctx, url, [b"", b"x" * (MAX_HEADER_BYTES + 1)])
        # the thread fails on its own (status_parts raises): the asker is told, it serves on
        comp.fail_parts = KeyError("queue")
        answer = _ask(ctx, url, STATUS)
        assert answer is not None and answer["kind"] == "error" and "KeyError" in answer["reason"], answer
        comp.fail_parts = None
        # an exception nobody foresaw, in the thread's own loop: logged, counted, serving on
        real_decode = status_module.decode

        def decode_once(*args: Any, **kwargs: Any) -> Any:
            monkeypatch.setattr(status_module, "decode", real_decode)
            raise RecursionError("maximum recursion depth exceeded")

        monkeypatch.setattr(status_module, "decode", decode_once)
        assert _ask(ctx, url, STATUS, timeout_ms=1000) is None
        answer = _ask(ctx, url, STATUS)
        assert answer is not None and answer["ok"] is True, answer
        counters = answer["status"]["counters"]
    finally:
        raw.close(0)
        ctx.term()
    assert counters[Count.REJECTED] == len(hostile) + 1
    assert counters[Count.REJECTED_BY_SOCKET] == {"status": len(hostile) + 1}
    assert counters[Count.REJECTED_BY_KIND]["bad_header"] == 3  # two too deep, one NaN
    assert counters[Count.STATUS_FAILURES] == 2


def test_every_socket_refuses_parts_over_the_limit(target: tuple[Target, str]) -> None:
    comp, _ = target
    assert comp.max_message_part == 1_000_000
    pull = comp.socket(zmq.PULL)
    assert pull.getsockopt(zmq.MAXMSGSIZE) == 1_000_000
    port = free_ports(1)[0]
    comp.bind(pull, f"tcp://127.0.0.1:{port}", "results-in")
    ctx = zmq.Context()
    try:
        url = f"tcp://127.0.0.1:{port}"
        # at the limit: delivered; one byte over: the sender is cut off, nothing is buffered
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(url)
        push.send_multipart([b"{}", bytes(1_000_000)])
        assert pull.poll(10_000) and len(pull.recv_multipart()[1]) == 1_000_000
        push.close(0)
        assert _disconnected(ctx, url, [b"{}", bytes(1_000_001)])
        assert not pull.poll(200)
    finally:
        ctx.term()


def test_a_flood_of_rejects_is_counted_whole_and_logged_a_few_times(caplog: pytest.LogCaptureFixture) -> None:
    comp = Target(free_ports(1)[0])
    caplog.set_level(logging.WARNING, logger="framepipe")
    for i in range(10_000):
        comp.reject(ProtocolError("x" * 100_000 + f"\n{i}", kind="garbage"), "results-in")
    comp.reject(ProtocolError("bad", kind="bad_header"), "results-sync")
    assert comp.counters[Count.REJECTED] == 10_001
    assert comp.rejected == {"garbage": 10_000, "bad_header": 1}
    assert comp.rejected_on == {"results-in": 10_000, "results-sync": 1}
    lines = [r.getMessage() for r in caplog.records if "rejected message" in r.getMessage()]
    assert 2 <= len(lines) <= 4, "one line per socket and second, not one per message"
    assert all(len(line) < 400 and "\n" not in line for line in lines), "a peer's text is cut to one short line"
