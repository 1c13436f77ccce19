"""What every component process shares: the lifecycle (``component``: open, run, stop,
close, a ``State``), its status endpoint (``status``) and the process spawner
(``processes``) that the launcher, ``worker -n N``, the bench and the tests all use.

May import: ``framepipe.wire``, ``framepipe.config``, ``framepipe.core``.
"""
