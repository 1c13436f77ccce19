"""The ventilator's in-flight window, driven directly with a fake clock (no sockets, no sleep)."""

from __future__ import annotations

import random

import pytest

from framepipe.config import Config
from framepipe.core.dispatch import InFlightWindow
from framepipe.testing.clock import FakeClock
from framepipe.ventilator import Ventilator

REDISPATCH_MS = 2000


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_window(clock: FakeClock, limit: int = 4) -> InFlightWindow[str]:
    return InFlightWindow(limit, REDISPATCH_MS / 1000, clock)


def send_all(window: InFlightWindow[str]) -> list[tuple[int, str, int]]:
    """What a pool with free workers receives: (id, parts, attempt) in send order."""
    out = []
    while (frame := window.next_to_send()) is not None:
        out.append((frame.frame_id, frame.parts, frame.attempts))
        window.sent(frame)
    return out


def test_frames_go_out_in_order_once_each(clock: FakeClock) -> None:
    window = make_window(clock)
    for fid in (7, 8, 9):
        assert window.accept(fid, f"frame {fid}")
    assert send_all(window) == [(7, "frame 7", 0), (8, "frame 8", 0), (9, "frame 9", 0)]
    assert window.next_to_send() is None
    assert window.counters == {"accepted": 3, "dispatched": 3}


def test_a_frame_from_the_source_twice_is_ignored(clock: FakeClock) -> None:
    window = make_window(clock)
    assert window.accept(1, "first")
    assert not window.accept(1, "again")
    assert send_all(window) == [(1, "first", 0)]
    assert window.counters["accepted"] == 1 and window.accepted.duplicates == 1


def test_a_worker_dies_with_frames_in_flight_they_are_sent_again(clock: FakeClock) -> None:
    window = make_window(clock)
    for fid in range(3):
        window.accept(fid, f"f{fid}")
    send_all(window)
    window.acknowledge([1])
    clock.advance_ms(10)  # long before the deadline: the disconnect alone hands them back
    assert window.worker_disconnected() == 2
    assert send_all(window) == [(0, "f0", 1), (2, "f2", 1)], "every sent, unacknowledged frame, again"
    assert window.counters["redispatched"] == 2 and window.counters["worker_disconnects"] == 1
    assert window.worker_disconnected() == 2, "a second failure hands them back again"


def test_a_disconnect_leaves_frames_not_yet_sent_queued_once(clock: FakeClock) -> None:
    window = make_window(clock)
    for fid in range(3):
        window.accept(fid, f"f{fid}")
    first = window.next_to_send()
    assert first is not None
    window.sent(first)
    assert window.worker_disconnected() == 1
    assert [fid for fid, _, _ in send_all(window)] == [1, 2, 0], "queued frames not duplicated, 0 at the back"


def test_redispatch_exactly_at_the_timeout_and_not_before(clock: FakeClock) -> None:
    window = make_window(clock)
    window.accept(1, "a")
    send_all(window)
    clock.advance_ms(500)
    window.accept(2, "b")
    send_all(window)
    clock.advance_ms(REDISPATCH_MS - 500 - 1)  # 1 ms before frame 1's deadline
    assert window.redispatch_overdue() == 0
    assert window.next_to_send() is None
    clock.advance_ms(1)  # exactly at it
    assert window.redispatch_overdue() == 1
    assert send_all(window) == [(1, "a", 1)], "only the frame whose deadline passed"
    clock.advance_ms(500)  # frame 2's deadline
    assert window.redispatch_overdue() == 1
    assert send_all(window) == [(2, "b", 1)]
    clock.advance_ms(REDISPATCH_MS - 500 - 1)  # 1 ms before frame 1's second deadline
    assert window.redispatch_overdue() == 0, "a re-sent frame gets a new deadline"
    clock.advance_ms(1)
    assert window.redispatch_overdue() == 1
    assert send_all(window) == [(1, "a", 2)]


def test_a_frame_waiting_for_a_worker_is_not_timed_out(clock: FakeClock) -> None:
    window = make_window(clock)
    window.accept(1, "a")
    clock.advance_ms(10 * REDISPATCH_MS)  # no worker took it: it was never sent
    assert window.redispatch_overdue() == 0
    assert send_all(window) == [(1, "a", 0)]


def test_an_ack_after_redispatch_counts_once(clock: FakeClock) -> None:
    window = make_window(clock)
    window.accept(1, "a")
    send_all(window)
    clock.advance_ms(REDISPATCH_MS)
    window.redispatch_overdue()
    send_all(window)
    assert window.acknowledge([1]) == 1, "the first result's ack"
    assert window.acknowledge([1]) == 0, "the duplicate result's ack"
    assert window.counters["acknowledged"] == 1 and window.counters["redispatched"] == 1
    assert window.ignored_acks == 1
    assert window.all_acknowledged


def test_an_ack_while_queued_for_redispatch_cancels_the_resend(clock: FakeClock) -> None:
    window = make_window(clock)
    window.accept(1, "a")
    send_all(window)
    clock.advance_ms(REDISPATCH_MS)
    assert window.redispatch_overdue() == 1
    assert window.acknowledge([1]) == 1  # the slow worker answered before a free one came
    assert window.next_to_send() is None
    assert list(window.queue) == [] and "redispatched" not in window.counters


def test_a_late_duplicate_ack_is_ignored(clock: FakeClock) -> None:
    window = make_window(clock)
    for fid in (1, 2):
        window.accept(fid, str(fid))
    send_all(window)
    assert window.acknowledge([1]) == 1
    window.accept(3, "3")
    before = (dict(window.in_flight), list(window.queue), dict(window.counters))
    assert window.acknowledge([1]) == 0
    assert (dict(window.in_flight), list(window.queue), dict(window.counters)) == before
    assert window.ignored_acks == 1


def test_an_ack_for_a_frame_never_dispatched_changes_nothing(clock: FakeClock) -> None:
    window = make_window(clock, limit=2)
    window.accept(5, "five")
    before = (dict(window.in_flight), list(window.queue), dict(window.counters))
    # 99 was never accepted; 5 was accepted but never sent: no result of it can exist
    assert window.acknowledge([99, 5]) == 0
    assert (dict(window.in_flight), list(window.queue), dict(window.counters)) == before
    assert "acknowledged" not in window.counters, "the summary shows no key for what never happened"
    assert window.ignored_acks == 2
    assert send_all(window) == [(5, "five", 0)]
    assert window.acknowledge([5]) == 1


def test_window_full_until_acks(clock: FakeClock) -> None:
    window = make_window(clock, limit=3)
    for fid in range(3):
        assert window.has_room
        window.accept(fid, str(fid))
    assert not window.has_room
    with pytest.raises(OverflowError):
        window.accept(3, "3")
    send_all(window)
    clock.advance_ms(REDISPATCH_MS)
    window.redispatch_overdue()
    assert not window.has_room, "a re-dispatch frees nothing"
    window.worker_disconnected()
    assert not window.has_room, "neither does a dead worker"
    window.acknowledge([1])
    assert window.has_room
    assert window.accept(3, "3")
    assert not window.has_room


def test_end_of_stream_waits_for_every_accepted_frame(clock: FakeClock) -> None:
    window = make_window(clock, limit=8)
    for fid in (0, 1, 2, 5, 6):
        window.accept(fid, str(fid))
    assert not window.all_acknowledged
    send_all(window)
    window.acknowledge([0, 1, 2, 6])
    assert not window.all_acknowledged, "frame 5 is still out"
    eos = window.end_of_stream()
    assert eos.accepted == [[0, 2], [5, 6]]
    assert eos.unacknowledged == [[5, 5]]
    assert window.counters["unacknowledged"] == 1
    window.acknowledge([5])
    assert window.all_acknowledged
    eos = window.end_of_stream()
    assert eos.accepted == [[0, 2], [5, 6]] and eos.unacknowledged == []
    assert window.counters["unacknowledged"] == 0, "present, at zero: the tests read it"


def test_memory_is_bounded_by_the_window_and_every_frame_is_acknowledged(clock: FakeClock) -> None:
    """A long run of random sends, losses, timeouts, disconnects and duplicate acks."""
    rng = random.Random(12)
    limit = 5
    window = make_window(clock, limit=limit)
    at_workers: list[int] = []  # what the pool holds; a dying worker loses some of it
    next_id, total = 0, 2000
    sends: dict[int, int] = {}
    for _step in range(20 * total):  # bounded: a window that loses a frame fails, never hangs
        if next_id == total and window.all_acknowledged:
            break
        while next_id < total and window.has_room:
            window.accept(next_id, str(next_id))
            next_id += 1
        assert len(window.in_flight) <= limit
        assert len(window.queue) <= limit and set(window.queue) <= set(window.in_flight)
        while (frame := window.next_to_send()) is not None and len(at_workers) < 3:
            window.sent(frame)
            at_workers.append(frame.frame_id)
            sends[frame.frame_id] = sends.get(frame.frame_id, 0) + 1
        roll = rng.random()
        if roll < 0.05:
            at_workers.clear()
            window.worker_disconnected()
        elif roll < 0.1 and at_workers:
            at_workers.pop(rng.randrange(len(at_workers)))  # a result lost on the way
        elif at_workers:
            done = at_workers.pop(0)
            window.acknowledge([done, done] if roll > 0.9 else [done])  # sometimes acked twice
        clock.advance_ms(rng.randrange(0, 400))
        window.redispatch_overdue()
    else:
        pytest.fail(f"stuck: {len(window.in_flight)} frame(s) never acknowledged, {next_id} of {total} accepted")
    assert window.counters["accepted"] == total == window.counters["acknowledged"]
    assert window.counters["dispatched"] == sum(sends.values())
    assert window.counters["redispatched"] == sum(n - 1 for n in sends.values()) > 0
    assert window.end_of_stream().accepted == [[0, total - 1]]


def test_workers_joining_and_leaving_are_named_once() -> None:
    window = make_window(FakeClock())
    assert window.workers_changed(["w2", "w1"]) == (["w1", "w2"], [])
    assert window.workers_changed(["w1", "w2"]) == ([], [])
    assert window.workers_changed(["w3", "w1"]) == (["w3"], ["w2"])
    assert window.workers == ["w1", "w3"]


def test_the_ventilator_summary_reports_the_window_under_the_same_keys() -> None:
    vent = Ventilator(Config.model_validate({"ventilator": {"window": 4}}))
    clock = FakeClock()
    vent.window = InFlightWindow(4, REDISPATCH_MS / 1000, clock)
    vent.window.worker_connected()
    vent.window.accept(1, [{}, b""])
    first = vent.window.next_to_send()
    assert first is not None
    vent.window.sent(first)
    vent.window.accept(2, [{}, b""])
    vent.window.acknowledge([1])
    summary = vent.summary()
    assert {k: summary[k] for k in ("accepted", "dispatched", "acknowledged", "worker_connections")} == {
        "accepted": 2,
        "dispatched": 1,
        "acknowledged": 1,
        "worker_connections": 1,
    }
    assert "redispatched" not in summary and "unacknowledged" not in summary
    assert (summary["in_flight"], summary["queued"], summary["window"]) == (1, 1, 4)
