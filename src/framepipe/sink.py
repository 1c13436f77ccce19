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

The decisions (new or duplicate, ack batches, what is missing, when to finish, who is alive)
are plain classes in ``framepipe.core.accounting``; this module is the loop that feeds them
the messages and sends what they say.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from framepipe.config import Config
from framepipe.core.accounting import FAILED_FRAMES, POOL_GRACE_S, ResultAccounting, WorkerLiveness
from framepipe.core.counters import Count
from framepipe.core.errors import ProtocolError
from framepipe.core.series import UPSTREAM_LOST
from framepipe.runtime.component import Component
from framepipe.runtime.status import Queue, StatusParts, StreamPeers
from framepipe.wire.broadcast import Broadcast
from framepipe.wire.messages import (
    Ack,
    AcquisitionStart,
    Done,
    EndOfStreamRequest,
    Heartbeat,
    Hello,
    Stop,
    Welcome,
    WorkersAlive,
)
from framepipe.wire.protocol import (
    TOPIC_ACK,
    TOPIC_STOP,
    TOPIC_WORKERS,
    decode,
    encode_control,
    encode_forward,
    from_ranges,
)
from framepipe.wire.ring import RingReader, host_identity, segment_prefix
from framepipe.wire.security import Security
from framepipe.wire.sockets import POLL_MS
from framepipe.wire.sync import exchange

STOP_REPEATS = 5
#: on SIGINT/SIGTERM, how long to wait for results subscribers' byes (exit within 5 s)
STOP_BYE_S = 2.0
#: missing or acknowledged-elsewhere id ranges named in the end-of-run log lines
LOGGED_RANGES = 20


class Sink(Component):
    """PULL results → accounting → PUB results; acks and stop on the control stream."""

    role = "sink"

    def __init__(self, config: Config, name: str | None = None, *, clock: Callable[[], float] = time.monotonic):
        super().__init__(config, name)
        self._clock = clock
        self.accounting = self._new_accounting()
        #: the acquisition whose results are gathered (its start), and the token its tasks
        #: carry: a result without it was never dispatched in this acquisition
        self.acquisition: AcquisitionStart | None = None
        self.token: str | None = None
        #: the end of stream asked for this acquisition: what the camera produced, and
        #: whether the deployment stays up after it
        self._eos: EndOfStreamRequest | None = None
        #: the results' outputs (name, dtype, shape) in this acquisition: the first result
        #: declares them, every other must match
        self._schema: list[tuple[str, str, tuple[int, ...]]] | None = None
        self._stream_ended = False
        self.liveness = WorkerLiveness(
            timeout_s=config.sink.worker_timeout_s,
            pool_size=config.workers.count,
            clock=clock,
        )
        self._eos_peer: bytes | None = None  # who sent the end of stream, owed the `done` reply
        self._ventilator_asked = False
        self._ventilator_released = False

    def _new_accounting(self) -> ResultAccounting:
        return ResultAccounting(
            window=self.config.ventilator.window,
            finish_timeout_s=self.config.run.finish_timeout_s,
            clock=self._clock,
            counters=self.counters,
        )

    @property
    def workers(self) -> dict[str, float]:
        """Live workers: name → when last heard (monotonic; the status endpoint shows ages)."""
        return self.liveness.alive

    def setup(self) -> None:
        cfg = self.config.sink
        if self.config.ventilator.source == "publisher" and self.config.security.enabled:
            # a client too: it reports each acquisition to the publisher with its own key, so
            # a missing key stops it here, not as "sink: no report" in every acquisition
            Security(self.config.security, self.role).client_keys()
        self.pull = self.socket(zmq.PULL, rcvhwm=max(self.config.workers.hwm_frames * 4, 8))
        self.bind(self.pull, cfg.bind_url(cfg.results_in_port), "results-in")
        #: workers' results rings (wire/result_ring.py), read in place as row 0
        self.rings = RingReader(row=0)
        shared = self.config.transport.shared_memory
        #: announced to the workers: one on this host writes its results into shared memory
        self._host = host_identity() if shared else None
        lossless = self.config.publisher.policy == "lossless"
        self.stream = Broadcast(
            self,
            stream="results",
            pub_url=cfg.bind_url(cfg.results_port),
            sync_url=cfg.bind_url(cfg.sync_port),
            preview_url=cfg.bind_url(cfg.preview_port),
            subscribers=cfg.subscribers,
            hwm=cfg.hwm_frames,
            lossless=lossless,
            # the results stream offers its subscribers the workers' rings (a one-slot ring of
            # its own for the probe); not when dropping: a dropped descriptor would hold a slot
            ring_prefix=segment_prefix(self.config.run.name, "results-probe") if shared and lossless else None,
            ring_slots=1,
            ring_row_offset=1,
            on_reader_gone=self.rings.release_row,
        )
        self.stream.make_ring(1)
        self.control = self.socket(zmq.PUB, sndhwm=10_000)
        self.bind(self.control, cfg.bind_url(cfg.control_port), "control")

    def teardown(self) -> None:
        stream: Broadcast | None = getattr(self, "stream", None)
        if stream is not None:
            stream.close_ring()
        rings: RingReader | None = getattr(self, "rings", None)
        if rings is not None:
            rings.close()

    def run(self) -> int:
        cfg = self.config.sink
        self.open()
        self.ready()
        started = time.monotonic()
        warned = False
        drained = True
        while True:
            # a drain cut short comes straight back for the rest; held acks wake the loop
            # when they are due (a batch fills or ACK_INTERVAL_S passes: not one ack per result)
            events = self.stream.poll(extra=(self.pull,), timeout_ms=self._poll_timeout_ms(drained))
            self.stream.service(events, defer=lambda kind, name: kind == "eos" or name == "ventilator")
            self._handle_deferred()
            drained = not events.get(self.pull) or self._drain_results()
            self._flush_acks()
            self._check_workers()
            if (
                self._ventilator_asked
                and not self._ventilator_released
                and not warned
                and time.monotonic() - started > cfg.sync_timeout_s
            ):
                self.log.warning("still waiting for: %s", self._not_ready_reason())
                warned = True
            if self.accounting.may_finish():
                self._reply_done()
                if not self._end_acquisition():
                    break
                continue
            self.stream.heartbeat(1.0)
            if self.stopping:
                self.log.info("stopping before the end of stream")
                break
        return self._finish()

    # ---------------------------------------------------------------- start and end
    def _not_ready_reason(self) -> str:
        missing = self.stream.missing_subscribers()
        reasons = [f"subscriber {m}" for m in missing]
        if not self.workers:
            reasons.append("a worker")
        elif not self.liveness.pool_ready():
            reasons.append(
                f"workers ({len(self.workers)} of {self.config.workers.count}, for up to {POOL_GRACE_S:g} s)"
            )
        if not missing and not self.stream.all_here():
            reasons.append("results subscriptions")
        return ", ".join(reasons)

    def _handle_deferred(self) -> None:
        for received in self.stream.deferred:
            peer, asked = received.identity, received.message
            request = asked.control
            if isinstance(request, Hello):
                # answer at once, so the ventilator's timeout can say what is missing
                self._ventilator_asked = True
                if self.liveness.pool_ready() and self.stream.all_here():
                    if request.acquisition is not None and request.token is not None:
                        if not self._begin(request.acquisition, request.token):
                            self.stream.sync.refuse(peer, "malformed acquisition")
                            continue
                    self.stream.sync.reply(peer, Welcome(workers=sorted(self.workers), instance=self.stream.instance))
                    if not self._ventilator_released:
                        self.log.info("ventilator released: %d worker(s), results subscribers here", len(self.workers))
                    self._ventilator_released = True
                else:
                    self.stream.sync.refuse(peer, f"waiting for {self._not_ready_reason()}")
            elif isinstance(request, EndOfStreamRequest) and request.name != "ventilator":
                self.reject(ProtocolError(f"eos from {request.name!r}", kind="bad_kind"), "results-sync")
                self.stream.sync.refuse(peer, "only the ventilator sends eos")
            elif isinstance(request, EndOfStreamRequest) and (
                refusal := self.trust.may(received.peer, "end_of_stream")
            ):
                # the name is only a claim: the ventilator's key (CURVE) or its host's address decides
                why = f"{refusal} (it said it was {request.name!r})"
                self.reject(ProtocolError(why, kind="forbidden"), "results-sync")
                self.stream.sync.refuse(peer, refusal)
            elif isinstance(request, EndOfStreamRequest):
                try:
                    ids = from_ranges(request.frame_ids)
                    unacknowledged = from_ranges(request.unacknowledged or [])
                except ProtocolError as e:
                    self.reject(e, "results-sync")
                    self.stream.sync.refuse(peer, str(e))
                    continue
                try:
                    source = None if request.source_ids is None else from_ranges(request.source_ids)
                except ProtocolError as e:
                    self.reject(e, "results-sync")
                    self.stream.sync.refuse(peer, str(e))
                    continue
                if request.acquisition and self.acquisition is None:
                    self._begin(request.acquisition, None)  # restarted since its start: adopt it
                self.accounting.end_of_stream(ids, unacknowledged, source)
                self._eos = request
                self._eos_peer = peer
                self.log.info(
                    "end of stream from the ventilator: %d frame(s) accepted, %s produced",
                    len(ids),
                    "?" if source is None else len(source),
                )
            else:
                self.reject(ProtocolError(f"unexpected {asked.kind} request", kind="bad_kind"), "results-sync")
                self.stream.sync.refuse(peer, f"unexpected {asked.kind}")
        self.stream.deferred.clear()

    def _begin(self, fields: dict[str, Any], token: str | None) -> bool:
        """The ventilator starts dispatching an acquisition: account for it, and start it
        on the results stream (the results recorders open its files)."""
        try:
            start = AcquisitionStart.model_validate({"v": 1, "kind": "start", **fields})
        except ValueError as e:
            self.reject(ProtocolError(f"malformed acquisition: {e}", kind="bad_field"), "results-sync")
            return False
        if token is not None:
            self.token = token
        if (
            self.acquisition is not None
            and self.acquisition.acquisition == start.acquisition
            and self.acquisition.run_id == start.run_id
        ):
            return True  # told again (we restarted, or the ventilator did): the same one
        if self.accounting.ended or self.accounting.ledger.received:
            self.accounting = self._new_accounting()
        self.acquisition = start
        self._schema = None
        self.stream.start(start)
        self.log.info("acquisition %d '%s': gathering results", start.acquisition, start.name)
        return True

    def _end_acquisition(self) -> bool:
        """The acquisition is accounted for: end it on the results stream, report it to the
        publisher; True when the deployment stays up (the loop goes on)."""
        eos = self._eos
        stays_up = bool(eos is not None and eos.stays_up) and not self.stopping
        acc = self.accounting
        done = acc.done()
        reason = (eos.reason if eos is not None else None) or acc.end_reason(self.stopping)
        if done["missing"]:
            reason = reason if reason != "complete" else "incomplete"
            self.log.error("missing frame ids: %s", acc.missing().ranges()[:LOGGED_RANGES])
        if done["failed"]:
            reason = reason if reason != "complete" else FAILED_FRAMES
            self._log_failed()
        self.stream.finish(
            STOP_BYE_S if self.stopping else self.config.run.finish_timeout_s,
            reason=reason,
            frame_ids=acc.accepted_ids(),
            stays_up=stays_up,
        )
        self._stream_ended = not stays_up
        if self.acquisition is not None:
            self.counters[Count.ACQUISITIONS] += 1
            self._report(done, reason)
        if stays_up:
            self.acquisition, self.token, self._eos, self._eos_peer = None, None, None, None
            self.accounting = self._new_accounting()
        return stays_up

    def _report(self, done: dict[str, int], reason: str) -> None:
        """The acquisition's report to the publisher, which judges it complete or not: the
        work stream's counts and each results subscriber's bye."""
        pub = self.config.publisher
        if self.config.ventilator.source != "publisher" or self.acquisition is None:
            return
        assert self.ctx is not None
        subscribers = {
            name: bye.model_dump(exclude_none=True, exclude={"v", "kind", "name", "t_send_ns"})
            for name, bye in self.stream.byes.items()
        }
        for name in self.stream.expected:
            subscribers.setdefault(name, {"error": "no bye from it for this acquisition", "complete": False})
        try:
            exchange(
                self.ctx,
                pub.connect_url(pub.sync_port),
                "bye",
                self.name,
                timeout_s=5.0,
                acquisition=self.acquisition.acquisition,
                received=done["received"],
                missing=done["missing"],
                expected=self.accounting.ledger.expected or 0,
                failed=done["failed"],
                complete=done["missing"] == 0 and done["failed"] == 0 and reason != UPSTREAM_LOST,
                subscribers=subscribers,
            )
        except Exception as e:  # the publisher may be gone: its summary says "no report"
            self.log.warning("report of acquisition %d to the publisher failed: %s", self.acquisition.acquisition, e)

    def _reply_done(self) -> None:
        """Answer the ventilator's end of stream (all accepted ids here, or the timeout passed)."""
        assert self._eos_peer is not None
        self._flush_acks(force=True)
        self.stream.sync.reply(self._eos_peer, Done.model_validate(self.accounting.done()))

    def _finish(self) -> int:
        self._flush_acks(force=True)
        acc = self.accounting
        done = acc.done()
        reason = acc.end_reason(self.stopping)
        self.log.info(
            "results: %d received (%d failed), %d missing, %d duplicate(s) dropped",
            done["received"],
            done["failed"],
            done["missing"],
            done["duplicates"],
        )
        if done["missing"]:
            self.log.error("missing frame ids: %s", acc.missing().ranges()[:LOGGED_RANGES])
        if done["failed"] and not self._stream_ended:
            self._log_failed()
        if done["acknowledged_elsewhere"]:
            self.log.warning(
                "%d frame(s) were received by an earlier sink (restarted mid-run): %s",
                done["acknowledged_elsewhere"],
                acc.acknowledged_elsewhere().ranges()[:LOGGED_RANGES],
            )
        for _ in range(STOP_REPEATS):
            self.control.send_multipart(encode_control(Stop(reason=reason), topic=TOPIC_STOP))
        if not self._stream_ended:
            # stopped mid-way: the results stream ends here, its subscribers' ledgers say what they lack
            self.stream.finish(
                STOP_BYE_S if self.stopping else self.config.run.finish_timeout_s,
                reason=reason,
                frame_ids=acc.accepted_ids() if acc.ended else None,
            )
        # stop once more, for workers that reconnected while the stream ended
        self.control.send_multipart(encode_control(Stop(reason=reason), topic=TOPIC_STOP))
        if not acc.ended:
            return 0 if self.stopping else 1
        # failed frames are accounted for (the ledgers list them, `framepipe run` exits 1 for
        # them): exiting 1 here would have a supervisor restart a sink that did its job
        return 0 if not done["missing"] else 1

    def _log_failed(self) -> None:
        acc = self.accounting
        self.log.error(
            "failed frame ids (the processor raised): %s; first: %s",
            acc.failed.ranges()[:LOGGED_RANGES],
            acc.first_failure,
        )

    # ---------------------------------------------------------------- results
    def _drain_results(self) -> bool:
        """Take up to 256 waiting results; True when the queue was emptied."""
        for _ in range(256):
            self._flush_acks()  # a full batch (or an overdue one) goes now
            try:
                parts = self.pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return True
            try:
                msg = decode(parts, max_payload_bytes=self.max_payload)
            except ProtocolError as e:
                self.reject(e, "results-in")
                continue
            if isinstance(msg.control, Heartbeat):
                self._heard_from(msg.control.name)  # its model checked the name
                continue
            if msg.kind != "result":
                self.reject(ProtocolError(f"unexpected {msg.kind} on results-in", kind="bad_kind"), "results-in")
                continue
            if msg.ring_slot is not None:
                try:
                    msg.in_ring(self.rings.read(msg.header))  # a worker's result, in place in its ring
                except ProtocolError as e:
                    self.reject(e, "results-in")
                    continue
            worker = str(msg.header.get("worker", "?"))
            self._heard_from(worker)
            if not self._dispatched(msg):
                self._let_slot_go(msg, forwarded=False)
                continue
            fid = msg.frame_id
            now_ns = time.time_ns()
            if not self.accounting.result(
                fid,
                worker,
                t_sink_ns=now_ns,
                t_acq_ns=msg.header["t_acq_ns"],
                nbytes=sum(a.nbytes for a in msg.arrays),
                failed=msg.failed,
            ):
                self._let_slot_go(msg, forwarded=False)
                continue  # a duplicate: acknowledged again, not forwarded
            header = {**msg.header, "seq": self.stream.seq, "t_sink_ns": now_ns}
            header.pop("token", None)  # the work stream's secret stays off the results stream
            if msg.ring_slot is not None:
                for key in ("ring", "slot", "gen"):
                    header.pop(key, None)
                header["kind"] = "result"  # in its place, second: a result as any other
                ok = self._forward_from_ring(header, msg, fid)
            else:
                ok = self.stream.publish(encode_forward(header, *msg.payloads), fid)
            if not ok:
                # stopped while a lossless results subscriber stayed full: received, not forwarded
                self.counters[Count.UNPUBLISHED] += 1
                self.warn.warning("unpublished", "stopping: result %d not forwarded (results subscriber full)", fid)
        return False

    def _forward_from_ring(self, header: dict[str, Any], msg: Any, fid: int) -> bool:
        """A result in a worker's ring: its descriptor to the subscribers that read rings,
        copies of its outputs to the others; then the sink lets the slot go for itself and
        for every subscriber that was not handed the descriptor."""
        assert msg.ring_slot is not None
        if not self.rings.ring(msg.ring_slot[0]).still(*msg.ring_slot[1:]):
            # reused under us (the sink was taken for gone): what we read may be torn, and it
            # was counted; the ventilator's re-dispatch cannot repair a result already counted
            self.reject(ProtocolError(f"result {fid}: its slot was reused", kind="stale_slot"), "results-in")
        arrays = list(msg.arrays)
        ok = self.stream.forward_ring(
            header, msg.ring_slot, lambda: encode_forward(header, *[np.array(a) for a in arrays]), fid
        )
        self._let_slot_go(msg, forwarded=True)
        return ok

    def _let_slot_go(self, msg: Any, *, forwarded: bool) -> None:
        """Let a worker's slot go: for the sink (row 0) and for the subscribers the sink
        answers for (all of them if it was not forwarded; else those not reading rings)."""
        if msg.ring_slot is None:
            return
        everyone = {self.stream.row_of(n) for n in self.stream.expected}
        rows = {0} | (self.stream.rows_not_on_ring() if forwarded else everyone)
        self.rings.release(msg.header, rows)

    def _dispatched(self, msg: Any) -> bool:
        """A result of a task of this acquisition (its token), of the declared shape."""
        header = self.acquisition.acquisition if self.acquisition is not None else None
        if header is None or msg.header.get("acquisition") != header:
            # a hung worker's late answer from an acquisition that is over, or before one
            self.counters[Count.STALE] += 1
            return False
        if self.token is not None and msg.header.get("token") != self.token:
            self.reject(ProtocolError("result without this acquisition's token", kind="forged"), "results-in")
            return False
        if msg.failed is not None:
            return True  # no outputs: the processor failed on it, the ledger lists it
        schema = msg.schema()
        if self._schema is None:
            self._schema = schema
        elif schema != self._schema:
            self.reject(
                ProtocolError(
                    f"result outputs {_describe(schema)} differ from this acquisition's {_describe(self._schema)}",
                    kind="bad_shape",
                ),
                "results-in",
            )
            return False
        return True

    def _poll_timeout_ms(self, drained: bool) -> int:
        if not drained:
            return 0
        due = self.accounting.acks_due_in_s()
        return POLL_MS if due is None else min(POLL_MS, math.ceil(due * 1000))

    def _flush_acks(self, force: bool = False) -> None:
        """Send the held acks if ``force``, a batch is full, or they are due."""
        ranges = self.accounting.take_acks(force)
        if ranges is not None:
            self.control.send_multipart(encode_control(Ack(ids=ranges), topic=TOPIC_ACK))

    # ---------------------------------------------------------------- liveness
    def _heard_from(self, name: str) -> None:
        if self.liveness.heard_from(name):
            self.log.info("worker %s joined", name)

    def _check_workers(self) -> None:
        for name, silent_s in self.liveness.check():
            self.counters[Count.WORKERS_LOST] += 1
            self.log.warning("worker %s lost: silent for %.1f s", name, silent_s)
        alive = self.liveness.announcement()
        if alive is not None:
            announcement = WorkersAlive(alive=alive, instance=self.stream.instance, host=self._host)
            self.control.send_multipart(encode_control(announcement, topic=TOPIC_WORKERS))

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out.update(self.accounting.summary())
        out.update(self.liveness.summary())
        latency = self.accounting.latency_ms()
        if latency is not None:
            out[Count.LATENCY_MS] = latency
        return out

    def status_parts(self) -> StatusParts:
        now = self.accounting.clock()
        return StatusParts(
            peers=StreamPeers.of(self.stream),
            queue=Queue(),
            workers={name: round(now - seen, 1) for name, seen in dict(self.workers).items()},
        )


def _describe(schema: list[tuple[str, str, tuple[int, ...]]]) -> str:
    return ", ".join(f"{name} {dtype}{list(shape)}" for name, dtype, shape in schema)
