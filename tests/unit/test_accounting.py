"""The sink's decisions, driven directly with a fake clock: no sockets, no sleeps."""

from __future__ import annotations

import collections
import random
import tracemalloc

import pytest

from framepipe.config import Config
from framepipe.core.accounting import (
    ACK_INTERVAL_S,
    POOL_GRACE_S,
    WORKERS_INTERVAL_S,
    ResultAccounting,
    WorkerLiveness,
    ack_batch_size,
)
from framepipe.core.ledger import FrameLedger
from framepipe.sink import Sink
from framepipe.testing.clock import FakeClock

FINISH_S = 5.0


def accounting(clock: FakeClock, window: int = 16) -> ResultAccounting:
    return ResultAccounting(window=window, finish_timeout_s=FINISH_S, clock=clock)


def feed(acc: ResultAccounting, *ids: int, worker: str = "w0") -> list[bool]:
    return [acc.result(i, worker, t_sink_ns=1_000 + i, t_acq_ns=i, nbytes=10) for i in ids]


def acked_ids(ranges: list[list[int]] | None) -> list[int]:
    assert ranges is not None, "acks were due"
    return [i for lo, hi in ranges for i in range(lo, hi + 1)]


# ---------------------------------------------------------------- duplicates and gaps


def test_a_late_duplicate_is_dropped_counted_and_acknowledged_again() -> None:
    acc = accounting(FakeClock())
    assert feed(acc, 0, 1, 2) == [True, True, True]
    assert acked_ids(acc.take_acks(force=True)) == [0, 1, 2]
    # a hung worker's late answer, after the re-dispatched copy was received
    assert feed(acc, 1, worker="w1") == [False]
    assert acc.counters["duplicates"] == 1 and acc.ledger.duplicates == 1
    assert acc.counters["received"] == 3
    assert acc.per_worker == {"w0": 3}, "a duplicate is not the worker's result"
    assert acked_ids(acc.take_acks(force=True)) == [1], "acknowledged again: its first ack may have been lost"


def test_gaps_are_missing_before_and_after_the_end_of_stream() -> None:
    acc = accounting(FakeClock())
    feed(acc, 0, 1, 3, 5)
    before = acc.summary()
    assert before["expected"] is None
    assert (before["missing"], before["missing_ids"]) == (2, [2, 4]), "holes between the ids seen"
    acc.end_of_stream(range(7), unacknowledged=[2, 4, 6])
    after = acc.summary()
    assert after["expected"] == 7
    assert (after["missing"], after["missing_ids"]) == (3, [2, 4, 6]), "the tail the ventilator accepted counts too"


def test_summary_counts_with_the_names_the_sink_reports() -> None:
    counters: collections.Counter[str] = collections.Counter()
    acc = ResultAccounting(window=16, finish_timeout_s=FINISH_S, clock=FakeClock(), counters=counters)
    feed(acc, 0, 1)
    feed(acc, 1)
    assert counters == {"received": 2, "duplicates": 1, "bytes": 20, "first_ns": 1_000, "last_ns": 1_001}
    assert acc.latency_ms() == {"p50": 0.001, "p95": 0.001, "p99": 0.001}


# ---------------------------------------------------------------- end of stream


def test_end_of_stream_before_all_results_waits_and_lists_what_is_missing() -> None:
    clock = FakeClock()
    acc = accounting(clock)
    assert not acc.may_finish(), "no end of stream yet"
    feed(acc, 0, 2)
    acc.end_of_stream(range(5), unacknowledged=[1, 3, 4])
    assert not acc.may_finish()
    assert list(acc.missing()) == [1, 3, 4]
    assert acc.done() == {"received": 2, "missing": 3, "duplicates": 0, "acknowledged_elsewhere": 0, "failed": 0}
    clock.now += FINISH_S - 0.001
    assert not acc.may_finish(), "still within the finish timeout"
    # results after the end of stream are results like any other
    assert feed(acc, 1, 3, 4) == [True, True, True]
    assert acc.may_finish()
    assert acc.done() == {"received": 5, "missing": 0, "duplicates": 0, "acknowledged_elsewhere": 0, "failed": 0}
    assert acc.end_reason(stopping=False) == "complete"
    assert acc.accepted_ids() == [0, 1, 2, 3, 4]


def test_the_finish_timeout_ends_an_incomplete_run() -> None:
    clock = FakeClock()
    acc = accounting(clock)
    feed(acc, 0)
    acc.end_of_stream([0, 1], unacknowledged=[1])
    clock.now += FINISH_S
    assert acc.may_finish()
    assert acc.done()["missing"] == 1
    assert acc.end_reason(stopping=False) == "incomplete"
    assert acc.end_reason(stopping=True) == "stopped"


def test_ids_an_earlier_sink_acknowledged_are_not_waited_for() -> None:
    acc = accounting(FakeClock())
    feed(acc, 0, 1)
    # 2 and 3 were acknowledged by the sink before a restart; 4 never was
    acc.end_of_stream(range(5), unacknowledged=[4])
    assert list(acc.acknowledged_elsewhere()) == [2, 3]
    assert list(acc.missing()) == [4]
    assert not acc.may_finish()
    feed(acc, 4)
    assert acc.may_finish()
    assert acc.summary()["acknowledged_elsewhere"] == 2
    assert acc.end_reason(stopping=False) == "complete"


def test_before_the_end_of_stream_a_run_is_never_complete() -> None:
    acc = accounting(FakeClock())
    feed(acc, 0, 1)
    assert not acc.ended and acc.accepted_ids() == []
    assert acc.end_reason(stopping=True) == "stopped"


# ---------------------------------------------------------------- acknowledgement batches


@pytest.mark.parametrize(("window", "batch"), [(16, 4), (2, 1), (4096, 64)])
def test_acks_go_out_when_a_batch_is_full(window: int, batch: int) -> None:
    assert ack_batch_size(window) == batch
    clock = FakeClock()
    acc = accounting(clock, window=window)
    acc.ack_due = clock.now + 3600  # only the count can release them
    for fid in range(batch - 1):
        feed(acc, fid)
        assert acc.take_acks() is None, "held until the batch is full"
    feed(acc, batch - 1)
    assert acked_ids(acc.take_acks()) == list(range(batch))
    assert not acc.acks_held and acc.take_acks(force=True) is None


def test_held_acks_go_out_when_due() -> None:
    clock = FakeClock()
    acc = accounting(clock, window=4096)
    feed(acc, 0)
    assert acked_ids(acc.take_acks(force=True)) == [0]  # a send starts the interval
    feed(acc, 1)
    clock.now += ACK_INTERVAL_S - 0.001
    assert acc.take_acks() is None and acc.acks_held
    clock.now += 0.002
    assert acked_ids(acc.take_acks()) == [1]


def test_a_duplicate_in_the_same_batch_still_counts_towards_it() -> None:
    acc = accounting(FakeClock(), window=16)  # batches of 4
    acc.ack_due = acc.clock() + 3600
    feed(acc, 0, 1, 1)
    assert acc.take_acks() is None
    feed(acc, 2)
    assert acc.take_acks() == [[0, 2]], "four results acknowledged, as ranges"


# ---------------------------------------------------------------- memory


def test_a_huge_frame_id_costs_no_memory_in_proportion_to_it() -> None:
    clock = FakeClock()
    acc = accounting(clock)
    # big enough that a list of the ids in between would show in the peak (~100 MB), small
    # enough that a regression fails here instead of exhausting the machine
    huge = 3_000_000
    tracemalloc.start()
    try:
        feed(acc, 0, huge)
        summary = acc.summary()
        acks = acc.take_acks(force=True)
        acc.end_of_stream([0, 1, huge], unacknowledged=[1])
        missing = list(acc.missing())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak} bytes for two results"
    assert summary["missing"] == huge - 1 and summary["missing_ids"][:2] == [1, 2]
    assert len(summary["missing_ids"]) == 1000
    assert acks == [[0, 0], [huge, huge]]
    assert missing == [1]


def test_missing_ids_agree_with_the_ledger_list() -> None:
    rng = random.Random(12)
    for _ in range(300):
        acc = accounting(FakeClock())
        ledger = FrameLedger()
        for fid in rng.choices(range(80), k=rng.randint(0, 60)):
            acc.result(fid, "w0", t_sink_ns=0)
            ledger.add(fid)
        if rng.random() < 0.7:
            accepted = rng.sample(range(90), rng.randint(0, 80))
            acc.end_of_stream(accepted, unacknowledged=accepted)
            ledger.expect(accepted)
        assert list(acc.missing()) == ledger.missing()


# ---------------------------------------------------------------- worker liveness


def liveness(clock: FakeClock, pool_size: int = 2) -> WorkerLiveness:
    return WorkerLiveness(timeout_s=3.0, pool_size=pool_size, clock=clock)


def test_a_silent_worker_is_lost_and_a_heard_one_is_not() -> None:
    clock = FakeClock()
    live = liveness(clock)
    assert live.heard_from("a") and live.heard_from("b")
    assert not live.heard_from("a"), "heard again: not a new worker"
    clock.now += 2.0
    live.heard_from("a")  # a heartbeat
    clock.now += 1.5
    assert live.check() == [("b", pytest.approx(3.5))]
    assert list(live.alive) == ["a"] and live.lost == ["b"]
    assert live.check() == [], "lost once"
    assert live.heard_from("b"), "back after being lost: joins again"
    assert live.summary() == {"workers_lost": ["b"], "workers_alive": 2}


def test_live_workers_are_announced_at_once_on_a_change_else_periodically() -> None:
    clock = FakeClock()
    live = liveness(clock)
    assert live.announcement() == []
    assert live.announcement() is None
    live.heard_from("a")
    assert live.announcement() == ["a"], "a join is announced at once"
    clock.now += WORKERS_INTERVAL_S - 0.001
    assert live.announcement() is None
    clock.now += 0.002
    assert live.announcement() == ["a"]
    clock.now += 3.1
    live.check()
    assert live.announcement() == [], "a loss is announced at once"


def test_the_pool_is_ready_when_complete_or_after_the_grace() -> None:
    clock = FakeClock()
    live = liveness(clock, pool_size=3)
    assert not live.pool_ready()
    live.heard_from("a")
    clock.now += POOL_GRACE_S - 0.001
    live.heard_from("b")
    assert not live.pool_ready(), "two of three, within the grace"
    clock.now += 0.001
    assert live.pool_ready(), "the grace counts from the first worker"
    full = liveness(FakeClock(), pool_size=2)
    full.heard_from("a")
    full.heard_from("b")
    assert full.pool_ready()


# ---------------------------------------------------------------- the sink's summary


def test_the_sink_summary_keeps_its_keys() -> None:
    clock = FakeClock()
    sink = Sink(Config.model_validate({}), clock=clock)
    sink.liveness.heard_from("w0")
    sink.accounting.result(0, "w0", t_sink_ns=5, t_acq_ns=1, nbytes=8)
    sink.accounting.result(0, "w0", t_sink_ns=6, t_acq_ns=1, nbytes=8)
    sink.accounting.end_of_stream([0, 1], unacknowledged=[1])
    summary = sink.summary()
    assert set(summary) == {
        *("component", "role", "host", "pid", "uptime_s", "state", "bound", "rejected_by_kind", "rejected_by_socket"),
        *("received", "duplicates", "bytes", "first_ns", "last_ns"),
        *("expected", "missing", "missing_ids", "acknowledged_elsewhere", "per_worker", "failed", "failed_ids"),
        *("workers_lost", "workers_alive", "latency_ms"),
    }
    assert (summary["received"], summary["duplicates"], summary["missing_ids"]) == (1, 1, [1])
    assert sink.workers == {"w0": clock.now}, "the status endpoint reads name → last heard"
