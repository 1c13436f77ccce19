"""The names of the counters: one place, so a counter is spelled the same by whoever counts it
and whoever reads it (status endpoint, summary file, dashboard, bench)."""

from __future__ import annotations

import enum


class Count(enum.StrEnum):
    """Every counter (and live figure) of the components, by the key it has in ``summary()``
    and ``counters``: declared here once, for the decisions of ``core`` and the components
    (``counters[Count.X] += 1``: a StrEnum is its string) and every reader (the status model,
    the dashboard, ``framepipe run``'s summary, the bench)."""

    # every component
    BYTES = "bytes"
    FIRST_NS = "first_ns"
    LAST_NS = "last_ns"
    REJECTED = "rejected"
    AUTH_DENIED = "auth_denied"
    REJECTED_BY_KIND = "rejected_by_kind"
    REJECTED_BY_SOCKET = "rejected_by_socket"
    #: the status endpoint failed on a request (logged, rate-limited; it serves on)
    STATUS_FAILURES = "status_failures"
    WIRE_BYTES = "wire_bytes"
    """Payload bytes as they travelled (compressed or not); ``bytes`` counts decoded ones."""
    WIRE_RATIO = "wire_ratio"
    """bytes / wire_bytes: the wire compression ratio (1.0: raw)."""
    WIRE_ENCODING = "wire_encoding"
    #: publisher: raw bytes of the frames that went on the socket (the wire ratio's numerator)
    PIXEL_BYTES = "pixel_bytes"
    #: publisher: each subscriber's path (shared memory or tcp); its ring (name, slots, in use)
    TRANSPORT = "transport"
    RING = "ring"
    """How this component's data payloads travel (sent or received): none, bitshuffle-lz4."""
    # publisher
    ACQUIRED = "acquired"
    PUBLISHED = "published"
    BLOCKED_MS = "blocked_ms"
    CAMERA_LOST = "camera_lost"
    SUBSCRIBERS = "subscribers"
    ACQUISITIONS = "acquisitions"
    """Acquisitions finished (every component that follows them)."""
    RESTARTS = "restarts"
    """Times the supervisor restarted this component (``FRAMEPIPE_RESTARTS``)."""
    STALE = "stale"
    """Messages of an acquisition that is over (a hung worker's late result): dropped."""
    # ventilator
    ACCEPTED = "accepted"
    ACKNOWLEDGED = "acknowledged"
    REDISPATCHED = "redispatched"
    SOURCE_GAPS = "source_gaps"
    IN_FLIGHT = "in_flight"
    QUEUED = "queued"
    WINDOW = "window"
    DISPATCHED = "dispatched"
    UNACKNOWLEDGED = "unacknowledged"
    WORKER_CONNECTIONS = "worker_connections"
    WORKER_DISCONNECTS = "worker_disconnects"
    # recorder
    CHUNKS_AS_RECEIVED = "chunks_as_received"
    #: ventilator: tasks handed to a same-host worker (a ring frame as its descriptor)
    TASKS_LOCAL = "tasks_local"
    #: worker: frames read in place from the publisher's ring
    FROM_RING = "from_ring"
    """Frames whose received compressed chunk was stored as it came (no recompression)."""
    # worker
    PROCESSED = "processed"
    FAILED = "failed"
    """Frames the processor failed on: a worker's, the sink's and the results recorder's count."""
    FAILED_IDS = "failed_ids"
    BUSY_NS = "busy_ns"
    #: CPU time of this worker's thread in the processor (the kernel as it runs here)
    PROCESSOR_CPU_NS = "processor_cpu_ns"
    # sink
    RECEIVED = "received"
    DUPLICATES = "duplicates"
    EXPECTED = "expected"
    MISSING = "missing"
    MISSING_IDS = "missing_ids"
    ACKNOWLEDGED_ELSEWHERE = "acknowledged_elsewhere"
    UNPUBLISHED = "unpublished"
    PER_WORKER = "per_worker"
    WORKERS_ALIVE = "workers_alive"
    WORKERS_LOST = "workers_lost"
    LATENCY_MS = "latency_ms"
    # recorder
    WRITTEN = "written"
    GAPS = "gaps"
    PATH = "path"
    FILE_BYTES = "file_bytes"
    FILES = "files"
    STORED_BYTES = "stored_bytes"
    RAW_BYTES = "raw_bytes"
    WRITE_NS = "write_ns"
    CPU_FIRST_NS = "cpu_first_ns"
    CPU_LAST_NS = "cpu_last_ns"
    COMPLETE = "complete"
    # viewer
    RECEIVED_FRAMES = "received_frames"
    STREAMS = "streams"
    VIEWS = "views"
    UNSHOWABLE = "unshowable"


def steady_rate(n: int | None, first_ns: int | None, last_ns: int | None) -> float | None:
    """Events per second from the first to the last of ``n`` (wall-clock ns): ``n - 1``
    intervals over that span, so start-up and drain do not count. None without two distinct
    timestamps. The one definition of "frames/s" the summary, dashboard and bench share."""
    if not n or not first_ns or not last_ns or last_ns <= first_ns:
        return None
    return (n - 1) / ((last_ns - first_ns) / 1e9)
