"""Subscribers: components that take a broadcast stream and do something with it."""

from framepipe.subscribers.recorder import Recorder

__all__ = ["Recorder"]
