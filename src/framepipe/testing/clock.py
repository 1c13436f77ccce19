"""A clock the test moves by hand, for the decision classes of ``framepipe.core``.

They take ``clock: Callable[[], float]`` (monotonic seconds); a test passes a
:class:`FakeClock` and moves time with :meth:`FakeClock.advance` or by setting ``now``.
Time is kept in whole nanoseconds, so a deadline reached by several small steps is reached
exactly, not a float rounding error early or late.
"""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self, start_s: float = 1000.0) -> None:
        # not 0: a send at time zero must look like any other
        self._ns = round(start_s * 1e9)

    @property
    def now(self) -> float:
        return self._ns / 1e9

    @now.setter
    def now(self, seconds: float) -> None:
        self._ns = round(seconds * 1e9)

    def advance(self, seconds: float) -> None:
        self._ns += round(seconds * 1e9)

    def advance_ms(self, ms: int) -> None:
        self._ns += ms * 1_000_000

    def __call__(self) -> float:
        return self._ns / 1e9
