"""What a stream needs from whoever owns its sockets, and the timing every socket loop shares.

The two sides of a broadcast stream (``broadcast``, ``subscription``) are parts of a
component: the component makes, binds and closes their sockets, counts what they reject
and says when to stop. :class:`SocketOwner` is that contract, written down so the wire
layer depends on it and not on :class:`framepipe.runtime.component.Component`, which
satisfies it.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import zmq

from framepipe.core.errors import ProtocolError
from framepipe.core.logs import RateLimitedLog

#: how long a loop blocks in poll before it looks at its stop flag again
POLL_MS = 100
#: linger on close: long enough to flush a final message, short enough to exit promptly
LINGER_MS = 1000


class SocketOwner(Protocol):
    """The component a stream belongs to."""

    name: str
    log: logging.Logger
    warn: RateLimitedLog
    max_payload: int
    ctx: zmq.Context[Any] | None

    @property
    def stopping(self) -> bool: ...

    def socket(self, kind: int, *, sndhwm: int | None = None, rcvhwm: int | None = None) -> zmq.Socket[Any]: ...

    def bind(self, sock: zmq.Socket[Any], url: str, what: str) -> None: ...

    def connect(self, sock: zmq.Socket[Any], url: str) -> None: ...

    def reject(self, err: ProtocolError, where: str) -> None: ...
