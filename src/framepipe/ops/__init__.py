"""Operating a deployment: the command line (``cli``), the local launcher (``launcher``,
``framepipe run``) and its checks before it starts anything (``preflight``), the operator's
commands to the publisher's control endpoint (``control``: acquire, stop, snap, shutdown),
the status client and table (``status``), the terminal dashboard (``dashboard``),
``inspect`` (with ``bounded_call``: a call in a child process with a timeout), and the web
server (``web``: the HTTP API, the control panel, ``/metrics``).

May import: everything below it (components, runtime, wire, cameras, storage, processing,
config, core) and ``framepipe.bench`` for ``framepipe bench``. Nothing imports it but
``framepipe.__main__``.
"""

from framepipe.ops.cli import main

__all__ = ["main"]
