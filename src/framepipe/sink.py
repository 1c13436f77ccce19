"""The sink: gathers results, accounts for every frame, republishes results.

- Exactly once: a result whose frame id was seen before is a duplicate (a re-dispatched
  frame or a hung worker's late answer) and is dropped; every result, new or duplicate,
  is acknowledged to the ventilator on the control stream (topic ``ack``), in batches.
- Liveness: workers' heartbeats arrive on the results socket; a worker silent for
  ``worker_timeout_s`` is reported by name here and, via topic ``workers``, by the
  ventilator.
- Start: answers the ventilator's hello only once the results subscribers are there and a
  worker has been seen. End: the ventilator's ``eos`` request lists the frame ids it
  accepted; the sink answers when it holds all of them (or the finish timeout passes),
  ends the results stream and tells the workers to stop.
"""

from __future__ import annotations

import time
from typing import Any

import zmq

from framepipe.config import Config
from framepipe.core.errors import ProtocolError
from framepipe.core.ledger import FrameLedger, IdRanges
from framepipe.runtime.component import Component
from framepipe.wire.broadcast import Broadcast
from framepipe.wire.protocol import (
    TOPIC_ACK,
    TOPIC_STOP,
    TOPIC_WORKERS,
    decode,
    encode_control,
    encode_forward,
    from_ranges,
    to_ranges,
)
from framepipe.wire.sockets import POLL_MS

#: acks go out when a batch is pending (a quarter of the window, at most this many), or as
#: soon as the results queue is empty: batching comes from bursts, and an idle sink never
#: sits on acks the ventilator's window is waiting for
ACK_BATCH = 64
#: longest an acknowledgement is held back to batch it with others (when not flushed sooner)
ACK_INTERVAL_S = 0.02
WORKERS_INTERVAL_S = 0.5
STOP_REPEATS = 5
#: on SIGINT/SIGTERM, how long to wait for results subscribers' byes (exit within 5 s)
STOP_BYE_S = 2.0
#: at start, how long after the first worker the sink waits for the rest of workers.count
POOL_GRACE_S = 2.0


class Sink(Component):
    """PULL results → accounting → PUB results; acks and stop on the control stream."""

    role = "sink"

    def __init__(self, config: Config, name: str | None = None):
        super().__init__(config, name)
        self.ledger = FrameLedger()
        self.workers: dict[str, float] = {}  # name → last heard (monotonic)
        self.lost_workers: list[str] = []
        self.per_worker: dict[str, int] = {}
        self._acks: list[int] = []
        # The ventilator stops sending when `window` frames are unacknowledged, so a batch
        # must fill long before that: a quarter of the window (at most ACK_BATCH).
        self._ack_batch = max(1, min(ACK_BATCH, config.ventilator.window // 4))
        self._ack_due = 0.0
        self._workers_due = 0.0
        self._eos_request: tuple[bytes, dict[str, Any]] | None = None
        self._eos_deadline = 0.0
        self._ventilator_asked = False
        self._first_worker_at = 0.0
        self._accepted: list[int] = []
        self._acked_by_ventilator = IdRanges()
        self._ventilator_released = False
        self._latency_ns: list[int] = []

    def run(self) -> int:
        cfg = self.config.sink
        self.pull = self.socket(zmq.PULL, rcvhwm=max(self.config.workers.hwm_frames * 4, 8))
        self.bind(self.pull, cfg.bind_url(cfg.results_in_port), "results-in")
        self.stream = Broadcast(
            self,
            stream="results",
            pub_url=cfg.bind_url(cfg.results_port),
            sync_url=cfg.bind_url(cfg.sync_port),
            preview_url=cfg.bind_url(cfg.preview_port),
            subscribers=cfg.subscribers,
            hwm=cfg.hwm_frames,
            lossless=self.config.publisher.policy == "lossless",
        )
        self.control = self.socket(zmq.PUB, sndhwm=10_000)
        self.bind(self.control, cfg.bind_url(cfg.control_port), "control")
        self.ready()
        started = time.monotonic()
        warned = False
        while True:
            # acks still pending (a drain cut short): come straight back for the rest
            events = self.stream.poll(extra=(self.pull,), timeout_ms=0 if self._acks else POLL_MS)
            self.stream.service(events, defer=lambda kind, name: kind == "eos" or name == "ventilator")
            self._handle_deferred()
            if events.get(self.pull) and self._drain_results():
                self._flush_acks(force=True)
            now = time.monotonic()
            self._check_workers(now)
            if (
                self._ventilator_asked
                and not self._ventilator_released
                and not warned
                and now - started > cfg.sync_timeout_s
            ):
                self.log.warning("still waiting for: %s", self._not_ready_reason())
                warned = True
            if self._eos_request is not None and self._try_finish(now):
                break
            if self.stopping:
                self.log.info("stopping before the end of stream")
                break
        return self._finish()

    # ---------------------------------------------------------------- start and end
    def _pool_ready(self) -> bool:
        """At least one worker; and the configured pool (``workers.count``), or the first
        worker was seen POOL_GRACE_S ago: a short run then does not finish before the
        other workers are up (they would miss the work, and the stop at the end)."""
        if not self.workers:
            return False
        if len(self.workers) >= self.config.workers.count:
            return True
        return time.monotonic() - self._first_worker_at >= POOL_GRACE_S

    def _not_ready_reason(self) -> str:
        missing = self.stream.missing_subscribers()
        reasons = [f"subscriber {m}" for m in missing]
        if not self.workers:
            reasons.append("a worker")
        elif not self._pool_ready():
            reasons.append(
                f"workers ({len(self.workers)} of {self.config.workers.count}, for up to {POOL_GRACE_S:g} s)"
            )
        if not missing and not self.stream.all_here():
            reasons.append("results subscriptions")
        return ", ".join(reasons)

    def _handle_deferred(self) -> None:
        for peer, kind, header in self.stream.deferred:
            if kind == "hello":
                # answer at once, so the ventilator's timeout can say what is missing
                self._ventilator_asked = True
                if self._pool_ready() and self.stream.all_here():
                    self.stream.sync.reply(peer, "welcome", workers=sorted(self.workers))
                    self._ventilator_released = True
                    self.log.info("ventilator released: %d worker(s), results subscribers here", len(self.workers))
                else:
                    self.stream.sync.reply(peer, "status", ok=False, waiting_for=self._not_ready_reason())
            elif kind == "eos" and header["name"] != "ventilator":
                # only the ventilator ends the work stream (CURVE, when on, proves who is who)
                self.reject(ProtocolError(f"eos from {header['name']!r}", kind="bad_kind"), "results-sync")
                self.stream.sync.reply(peer, "status", ok=False, error="only the ventilator sends eos")
            elif kind == "eos":
                try:
                    ids = from_ranges(header.get("frame_ids"))
                    unacknowledged = set(from_ranges(header.get("unacknowledged", [])))
                except ProtocolError as e:
                    self.reject(e, "results-sync")
                    self.stream.sync.reply(peer, "status", ok=False, error=str(e))
                    continue
                self.ledger.expect(ids)
                self._accepted = ids
                # acknowledged, yet not seen here: a sink before a restart handled them
                self._acked_by_ventilator = IdRanges(i for i in ids if i not in unacknowledged)
                self._eos_request = (peer, header)
                self._eos_deadline = time.monotonic() + self.config.run.finish_timeout_s
                self.log.info("end of stream from the ventilator: %d frame(s) accepted", len(ids))
            else:
                self.reject(ProtocolError(f"unexpected {kind} request", kind="bad_kind"), "results-sync")
                self.stream.sync.reply(peer, "status", ok=False, error=f"unexpected {kind}")
        self.stream.deferred.clear()

    def _missing(self) -> list[int]:
        """Expected and neither received here nor acknowledged by an earlier sink."""
        return [i for i in self.ledger.missing() if i not in self._acked_by_ventilator]

    def _acked_elsewhere(self) -> list[int]:
        """Frames an earlier sink (before a restart) received and acknowledged: not here."""
        return [i for i in self.ledger.missing() if i in self._acked_by_ventilator]

    def _try_finish(self, now: float) -> bool:
        assert self._eos_request is not None
        missing = self._missing()
        if missing and now < self._eos_deadline:
            return False
        peer, _ = self._eos_request
        self._flush_acks(force=True)
        self.stream.sync.reply(
            peer,
            "done",
            received=self.ledger.received,
            missing=len(missing),
            duplicates=self.ledger.duplicates,
            acknowledged_elsewhere=len(self._acked_elsewhere()),
        )
        return True

    def _finish(self) -> int:
        self._flush_acks(force=True)
        summary = self.summary()
        reason = (
            "complete" if self._eos_request and not summary["missing"] else "stopped" if self.stopping else "incomplete"
        )
        self.log.info(
            "results: %d received, %d missing, %d duplicate(s) dropped",
            self.ledger.received,
            summary["missing"],
            self.ledger.duplicates,
        )
        if summary["missing"]:
            self.log.error("missing frame ids: %s", to_ranges(self._missing())[:20])
        if summary["acknowledged_elsewhere"]:
            self.log.warning(
                "%d frame(s) were received by an earlier sink (restarted mid-run): %s",
                summary["acknowledged_elsewhere"],
                to_ranges(self._acked_elsewhere())[:20],
            )
        for _ in range(STOP_REPEATS):
            self.control.send_multipart(encode_control("stop", topic=TOPIC_STOP, reason=reason))
        # the results stream should have carried every accepted frame: subscribers'
        # ledgers then show what they lack, even across a restart of this sink
        self.stream.finish(
            STOP_BYE_S if self.stopping else self.config.run.finish_timeout_s,
            reason=reason,
            frame_ids=self._accepted if self._eos_request else None,
        )
        # stop once more, for workers that reconnected while the stream ended
        self.control.send_multipart(encode_control("stop", topic=TOPIC_STOP, reason=reason))
        if self._eos_request is None:
            return 0 if self.stopping else 1
        return 0 if not summary["missing"] else 1

    # ---------------------------------------------------------------- results
    def _drain_results(self) -> bool:
        """Take up to 256 waiting results; True when the queue was emptied."""
        for _ in range(256):
            self._flush_acks(time.monotonic())  # a full batch (or an overdue one) goes now
            try:
                parts = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            try:
                msg = decode(parts, max_payload_bytes=self.max_payload)
            except ProtocolError as e:
                self.reject(e, "results-in")
                continue
            if msg.kind == "heartbeat":
                name = msg.header.get("name")
                if not isinstance(name, str) or not name or len(name) > 200:
                    self.reject(ProtocolError("heartbeat without a worker name", kind="missing_field"), "results-in")
                else:
                    self._heard_from(name)
                continue
            if msg.kind != "result":
                self.reject(ProtocolError(f"unexpected {msg.kind} on results-in", kind="bad_kind"), "results-in")
                continue
            worker = str(msg.header.get("worker", "?"))
            self._heard_from(worker)
            fid = msg.frame_id
            self._acks.append(fid)
            if not self.ledger.add(fid):
                self.counters["duplicates"] += 1
                continue
            now_ns = time.time_ns()
            if self.ledger.received == 1:
                self.counters["first_ns"] = now_ns
            self.counters["last_ns"] = now_ns
            self.counters["received"] += 1
            self.counters["bytes"] += msg.array.nbytes if msg.array is not None else 0
            self.per_worker[worker] = self.per_worker.get(worker, 0) + 1
            if len(self._latency_ns) < 100_000:
                self._latency_ns.append(now_ns - msg.header["t_acq_ns"])
            header = {**msg.header, "seq": self.stream.seq, "t_sink_ns": now_ns}
            if not self.stream.publish(encode_forward(header, msg.payload), fid):
                # stopped while a lossless results subscriber stayed full: received, not forwarded
                self.counters["unpublished"] += 1
                self.warn.warning("unpublished", "stopping: result %d not forwarded (results subscriber full)", fid)
        return False

    def _flush_acks(self, now: float | None = None, force: bool = False) -> None:
        """Send the pending acks if ``force``, a batch is full, or the oldest is due."""
        if not self._acks:
            return
        now = time.monotonic() if now is None else now
        if not force and len(self._acks) < self._ack_batch and now < self._ack_due:
            return
        self.control.send_multipart(encode_control("ack", topic=TOPIC_ACK, ids=to_ranges(self._acks)))
        self._acks.clear()
        self._ack_due = now + ACK_INTERVAL_S

    # ---------------------------------------------------------------- liveness
    def _heard_from(self, name: str) -> None:
        if not self.workers and not self.lost_workers:
            self._first_worker_at = time.monotonic()
        if name not in self.workers:
            self.log.info("worker %s joined", name)
            self._workers_due = 0.0
        self.workers[name] = time.monotonic()

    def _check_workers(self, now: float) -> None:
        timeout = self.config.sink.worker_timeout_s
        for name, seen in list(self.workers.items()):
            if now - seen > timeout:
                del self.workers[name]
                self.lost_workers.append(name)
                self.counters["workers_lost"] += 1
                self.log.warning("worker %s lost: silent for %.1f s", name, now - seen)
                self._workers_due = 0.0
        if now >= self._workers_due:
            self.control.send_multipart(encode_control("status", topic=TOPIC_WORKERS, alive=sorted(self.workers)))
            self._workers_due = now + WORKERS_INTERVAL_S

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        led = self.ledger.summary()
        missing = self._missing()
        out.update(
            expected=led["expected"],
            missing=len(missing),
            missing_ids=missing[:1000],
            acknowledged_elsewhere=len(self._acked_elsewhere()),
            per_worker=dict(self.per_worker),
            workers_lost=list(self.lost_workers),
            workers_alive=len(self.workers),
        )
        if self._latency_ns:
            import numpy as np

            lat = np.array(self._latency_ns) / 1e6
            out["latency_ms"] = {
                p: round(float(np.percentile(lat, q)), 3) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))
            }
        return out
