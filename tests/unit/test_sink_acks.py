"""The sink's acknowledgement batching, on a real inproc socket pair (no network).

The batching decisions live in ``ResultAccounting`` (tests/unit/test_accounting.py); this
checks what the sink puts on its control socket, with the sink's clock faked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import zmq

from framepipe.config import Config
from framepipe.sink import Sink
from framepipe.testing.clock import FakeClock
from framepipe.wire.protocol import from_ranges
from framepipe.wire.sockets import POLL_MS


@pytest.fixture
def control() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.bind("inproc://control")
    sub = ctx.socket(zmq.SUB)
    sub.subscribe(b"ack")
    sub.connect("inproc://control")
    assert pub.poll(5000), "subscription not seen"
    pub.recv()  # the subscription: from now on nothing published is lost
    try:
        yield pub, sub
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        ctx.term()


def _result(sink: Sink, fid: int) -> None:
    sink.accounting.result(fid, "worker-0", t_sink_ns=0)


def _acked(sub: zmq.Socket[bytes]) -> list[list[int]]:
    batches = []
    while sub.poll(0):
        _topic, header = sub.recv_multipart()
        batches.append(from_ranges(json.loads(header)["ids"]))
    return batches


@pytest.mark.parametrize(("window", "batch"), [(16, 4), (2, 1), (4096, 64)])
def test_a_batch_is_a_quarter_of_the_window(
    control: tuple[zmq.Socket[bytes], zmq.Socket[bytes]], window: int, batch: int
) -> None:
    pub, sub = control
    clock = FakeClock()
    sink = Sink(Config.model_validate({"ventilator": {"window": window}}), clock=clock)
    sink.control = pub
    sink.accounting.ack_due = clock.now + 3600  # the timer never fires here: only the batch size flushes
    for fid in range(batch):
        _result(sink, fid)
        sink._flush_acks()
    assert _acked(sub) == [list(range(batch))], "one message, sent when the batch was full"


def test_held_acks_go_out_when_due(control: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    pub, sub = control
    clock = FakeClock()
    sink = Sink(Config.model_validate({"ventilator": {"window": 16}}), clock=clock)
    sink.control = pub
    sink.accounting.ack_due = clock.now + 0.02
    _result(sink, 7)
    sink._flush_acks()
    assert _acked(sub) == []  # held back to batch...
    clock.now += 0.021
    sink._flush_acks()
    assert _acked(sub) == [[7]]  # ...until due


def test_the_loop_sleeps_until_held_acks_are_due_not_a_poll_per_result() -> None:
    """The sink's poll: straight back for a drain cut short, until the held acks are due,
    else the usual tick. It used to send every ack as soon as its queue ran dry."""
    clock = FakeClock()
    sink = Sink(Config.model_validate({"ventilator": {"window": 16}}), clock=clock)
    assert sink._poll_timeout_ms(drained=True) == POLL_MS  # nothing held
    sink.accounting.ack_due = clock.now + 0.0071
    _result(sink, 1)
    assert sink.accounting.acks_due_in_s() == pytest.approx(0.0071)
    assert sink._poll_timeout_ms(drained=True) == 8  # rounded up: never woken before due
    assert sink._poll_timeout_ms(drained=False) == 0
    clock.now += 0.01
    assert sink._poll_timeout_ms(drained=True) == 0  # overdue: flushed on this pass
