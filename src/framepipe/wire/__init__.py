"""What crosses the network: the message format (``protocol``) and the control messages'
models (``messages``), the two sides of a broadcast stream (``broadcast``,
``subscription``), REQ/REP synchronisation (``sync``) and CURVE security (``security``).

May import: ``framepipe.core``, ``framepipe.config``. Knows nothing of components, cameras,
files or processing; a stream is given its sockets by its owner (``wire.sockets.SocketOwner``).
"""
