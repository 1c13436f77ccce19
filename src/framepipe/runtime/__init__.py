"""What every component process shares: the lifecycle (``component``: open, run, stop,
close, a ``State``), its status endpoint (``status``) and the process spawner
(``processes``) that the launcher, ``worker -n N``, the bench and the tests all use.

May import: ``framepipe.wire``, ``framepipe.config``, ``framepipe.core``.
"""

from framepipe.runtime.component import Component, SummaryFile
from framepipe.runtime.processes import Child, ChildSet, RestartPolicy, exit_status, framepipe_argv
from framepipe.runtime.status import ComponentStatus, State, StatusParts

__all__ = [
    "Child",
    "ChildSet",
    "Component",
    "ComponentStatus",
    "RestartPolicy",
    "State",
    "StatusParts",
    "SummaryFile",
    "exit_status",
    "framepipe_argv",
]
