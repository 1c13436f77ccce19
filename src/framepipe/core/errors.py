"""Errors raised by framepipe.

The tree is small on purpose; the CLI turns any of these into one readable line::

    FramepipeError
    ├── ConfigError        bad config file, key, value or override (exit code 2)
    ├── ProtocolError      a message on the wire that fails validation
    ├── CameraError        a camera that cannot be opened, configured or read
    ├── RecorderError      an HDF5 file that cannot be created or written
    ├── ProcessorError     a processor that cannot be loaded or set up (exit code 2)
    └── SyncError          a REQ/REP start or end synchronisation that timed out

Library errors (zmq, h5py, OS) are caught at the boundary of a component and re-raised
as one of these ``from`` the original, with the endpoint, file or frame that failed.
"""

from __future__ import annotations


class FramepipeError(Exception):
    """Base class of every error framepipe raises on purpose."""

    exit_code = 1


class ConfigError(FramepipeError):
    """A configuration problem: names the file and the key."""

    exit_code = 2

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class ProtocolError(FramepipeError):
    """A received message that is not a valid framepipe message."""

    def __init__(self, message: str, *, kind: str = "malformed"):
        #: short machine-readable reason, used as a counter name ("bad_version", ...)
        self.kind = kind
        super().__init__(message)


class CameraError(FramepipeError):
    """A camera source that cannot be opened, configured or read."""

    exit_code = 2


class RecorderError(FramepipeError):
    """An HDF5 file that cannot be created or written."""


class SyncError(FramepipeError):
    """A start/end synchronisation that did not complete in time."""


class ProcessorError(FramepipeError):
    """A processor that cannot be found, imported or set up: the worker does not start."""

    exit_code = 2
