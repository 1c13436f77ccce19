"""Operating a deployment: the command line (``cli``), the local launcher (``launcher``,
``framepipe run``) and its checks before it starts anything (``preflight``), the status
client and table (``status``), the acquisition control client (``control``), the terminal
dashboard (``dashboard``), ``inspect``, and the web server (``web``: API, control panel, metrics).

May import: everything below it (components, runtime, wire, cameras, storage, processing,
config, core) and ``framepipe.bench`` for ``framepipe bench``. Nothing imports it but
``framepipe.__main__``.
"""

from framepipe.ops.cli import main

__all__ = ["main"]
