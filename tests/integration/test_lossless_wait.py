"""A lossless publisher held up by a full subscriber waits asleep, it does not spin.

libzmq's XPUB reports POLLOUT even when ``XPUB_NODROP`` would refuse the message
(libzmq #1597); waiting on that poll spun a core at 100 % and, on two cores, halved the
stream. Real sockets over tcp: a subscriber that never reads fills up, the publisher is
told to stop and gets ``STOP_SEND_S`` more to send; the CPU time it used meanwhile is
the outcome.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import zmq

from framepipe.config import Config
from framepipe.runtime.component import Component
from framepipe.testing.ports import free_ports
from framepipe.wire.broadcast import STOP_SEND_S, Broadcast

pytestmark = pytest.mark.integration


def test_a_blocked_lossless_publish_sleeps_instead_of_spinning() -> None:
    pub_port, sync_port = free_ports(2)
    owner = Component(Config(), "publisher")
    stream = Broadcast(
        owner,
        stream="frames",
        pub_url=f"tcp://127.0.0.1:{pub_port}",
        sync_url=f"tcp://127.0.0.1:{sync_port}",
        subscribers=[],
        hwm=2,
        lossless=True,
    )
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 65536)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{pub_port}")
    try:
        deadline = time.monotonic() + 10
        while stream.subscriptions == 0:  # its subscription reached the XPUB
            assert time.monotonic() < deadline, "subscription never arrived"
            stream.service(stream.poll(timeout_ms=100))
        frame = np.zeros(1 << 20, np.uint8)
        owner.stop()  # a stopped owner's publish gives up after STOP_SEND_S of waiting
        for frame_id in range(10_000):  # the subscriber never reads: this fills up
            wall0, cpu0 = time.monotonic(), time.thread_time()
            if not stream.publish([b"{}", frame], frame_id):
                break
        else:
            pytest.fail("10,000 MB went to a subscriber that reads nothing")
        wall, cpu = time.monotonic() - wall0, time.thread_time() - cpu0
        assert wall >= STOP_SEND_S, f"publish gave up after {wall:.2f} s"
        assert cpu < 0.2 * wall, f"publish used {cpu:.2f} s of CPU in {wall:.2f} s of waiting: it spins"
        assert stream.blocked_s >= STOP_SEND_S
    finally:
        sub.close(0)
        ctx.term()
        owner.close()
