"""Free TCP ports for throwaway local deployments (benchmarks, measurements, tests).

Ports come from *below* the kernel's ephemeral range. A port picked by binding to port 0
lies inside that range, and between our picking it and a component binding it, a
connecting socket (a worker dialling a ventilator that is not up yet) can be given the
very same port as its own source port — a TCP self-connect — and the binder then fails
with "Address already in use". Below the range nothing is handed out implicitly.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free on ``host`` now and outside the ephemeral range."""
    high = min(_ephemeral_low(), 65536) - 1
    low = max(10000, high - 20000)
    rng = random.SystemRandom()
    chosen: list[int] = []
    held: list[socket.socket] = []
    try:
        for _ in range(50 * n):
            if len(chosen) == n:
                break
            port = rng.randint(low, high)
            if port in chosen:
                continue
            s = socket.socket()
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            held.append(s)  # held until all are picked, so they differ
            chosen.append(port)
    finally:
        for s in held:
            s.close()
    if len(chosen) < n:
        raise RuntimeError(f"could not find {n} free ports between {low} and {high}")
    return chosen
