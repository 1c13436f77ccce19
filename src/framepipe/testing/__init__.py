"""Helpers shared by the tests and the bench: throwaway deployments of real CLI processes
(``deployment``), a free port picker (``ports``), a scripted publisher (``feeder``) and a
stream watcher (``streams``). Like ``ophyd_async.testing``: runtime code never imports it.

May import: everything below ``framepipe.bench`` (components, runtime, wire, cameras,
storage, processing, config, core).
"""

from framepipe.testing.clock import FakeClock
from framepipe.testing.deployment import Deployment, Proc
from framepipe.testing.feeder import StreamFeeder
from framepipe.testing.ports import free_ports
from framepipe.testing.streams import StreamWatcher

__all__ = ["Deployment", "FakeClock", "Proc", "StreamFeeder", "StreamWatcher", "free_ports"]
