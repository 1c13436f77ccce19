"""What crosses the network: the message format (``protocol``) and the control messages'
models (``messages``), the two sides of a broadcast stream (``broadcast``,
``subscription``), REQ/REP synchronisation (``sync``) and CURVE security (``security``).

May import: ``framepipe.core``, ``framepipe.config``. Knows nothing of components, cameras,
files or processing; a stream is given its sockets by its owner (``wire.sockets.SocketOwner``).
"""

from framepipe.wire.broadcast import Broadcast
from framepipe.wire.protocol import Message, decode, encode_control, encode_data, from_ranges, to_ranges
from framepipe.wire.sockets import POLL_MS, SocketOwner
from framepipe.wire.subscription import Subscription
from framepipe.wire.sync import Exchange, SyncServer, exchange

__all__ = [
    "POLL_MS",
    "Broadcast",
    "Exchange",
    "Message",
    "SocketOwner",
    "Subscription",
    "SyncServer",
    "decode",
    "encode_control",
    "encode_data",
    "exchange",
    "from_ranges",
    "to_ranges",
]
