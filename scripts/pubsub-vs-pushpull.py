"""Raw pyzmq ceiling of the two socket patterns framepipe uses, same buffers, two processes.

Explains the transport figure of `framepipe bench`: how fast libzmq moves 1024×1024 uint16
frames zero-copy through XPUB(NODROP)→SUB (the broadcast streams) and PUSH→PULL (the
work path), with nothing of framepipe in between, and what waiting for a full XPUB on
poll(POLLOUT) costs: an XPUB reports POLLOUT even when XPUB_NODROP refuses the message
(libzmq #1597), so that wait spins a core; and PUSH→PULL over ipc:// (Unix sockets) for
same-host hops. Usage: python scripts/pubsub-vs-pushpull.py [FRAMES]
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import tempfile
import time

import numpy as np
import zmq

from framepipe.testing.ports import free_ports


def receive(kind: int, url: str, count: int, q: mp.Queue) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(kind)
    if kind == zmq.SUB:
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, 32)
    sock.connect(url)
    q.put("ready")
    t0 = c0 = 0.0
    for n in range(count):
        parts = sock.recv_multipart(copy=False)
        if n == 0:
            t0, c0 = time.perf_counter(), time.process_time()
        np.frombuffer(parts[1].buffer, np.uint16)
    q.put(((count - 1) / (time.perf_counter() - t0), (time.process_time() - c0) / (count - 1) * 1e3))
    sock.close(0)
    ctx.term()


def send(kind: int, url: str, count: int, wait: str, q: mp.Queue) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM, 32)
    if kind == zmq.XPUB:
        sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.bind(url)
    if kind == zmq.XPUB:
        sock.recv()  # the subscription: nothing is sent before it arrives
    frames = [np.random.default_rng(i).integers(0, 65535, (1024, 1024), dtype=np.uint16) for i in range(4)]
    c0 = time.process_time()
    for i in range(count):
        parts = [b'{"v":1}', frames[i % 4]]
        if wait == "blocking send":
            sock.send_multipart(parts, copy=False)
            continue
        while True:  # wait == "poll(POLLOUT)"
            try:
                sock.send_multipart(parts, copy=False, flags=zmq.NOBLOCK)
                break
            except zmq.Again:
                sock.poll(100, zmq.POLLOUT)
    q.put((time.process_time() - c0) / count * 1e3)
    sock.close(linger=5000)
    ctx.term()


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    ipc_dir = tempfile.mkdtemp(prefix="framepipe-ipc-")
    cases = (
        ("PUSH->PULL", zmq.PUSH, zmq.PULL, "poll(POLLOUT)", "tcp"),
        ("PUSH->PULL ipc", zmq.PUSH, zmq.PULL, "poll(POLLOUT)", "ipc"),
        ("XPUB(NODROP)->SUB", zmq.XPUB, zmq.SUB, "blocking send", "tcp"),
        ("XPUB(NODROP)->SUB", zmq.XPUB, zmq.SUB, "poll(POLLOUT)", "tcp"),
    )
    for name, tx, rx, wait, transport in cases * 2:
        url = f"tcp://127.0.0.1:{free_ports(1)[0]}" if transport == "tcp" else f"ipc://{ipc_dir}/frames"
        q: mp.Queue = mp.Queue()
        sq: mp.Queue = mp.Queue()
        r = mp.Process(target=receive, args=(rx, url, count, q))
        r.start()
        q.get()
        s = mp.Process(target=send, args=(tx, url, count, wait, sq))
        s.start()
        fps, rx_cpu = q.get()
        tx_cpu = sq.get()
        print(f"{name:<18} {wait:<14} {fps:7.0f} frames/s  CPU/frame: sender {tx_cpu:.2f} ms, receiver {rx_cpu:.2f} ms")
        s.join()
        r.join()


if __name__ == "__main__":
    main()
