"""The one definition of a steady rate: n - 1 intervals between the first and last event."""

from __future__ import annotations

import pytest

from framepipe.core.counters import steady_rate


def test_n_minus_one_intervals_over_the_span() -> None:
    assert steady_rate(11, 1_000_000_000, 2_000_000_000) == pytest.approx(10.0)


@pytest.mark.parametrize(("n", "first", "last"), [(0, 1, 2), (5, None, 2), (5, 0, 2), (5, 3, 3), (5, 4, 3)])
def test_no_rate_without_events_or_a_span(n: int, first: int | None, last: int | None) -> None:
    assert steady_rate(n, first, last) is None
