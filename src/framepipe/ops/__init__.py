"""Operating a deployment: the command line (``cli``), the local launcher (``launcher``,
``framepipe run``), the status client and table (``status``), the terminal dashboard
(``dashboard``) and ``inspect`` (with ``bounded_call``: a call in a child process with a timeout).

May import: everything below it (components, runtime, wire, cameras, storage, processing,
config, core) and ``framepipe.bench`` for ``framepipe bench``. Nothing imports it but
``framepipe.__main__``.
"""

from framepipe.ops.cli import main

__all__ = ["main"]
