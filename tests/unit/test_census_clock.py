"""The census's clock offset: read from the quickest of a few round trips to the server."""

from __future__ import annotations

import pytest

from pytest_dbguard.recording import census

pytestmark = pytest.mark.unit


class FakeServer:
    """A server clock read at the middle of each round trip; `clocks` are its answers."""

    def __init__(self, clocks: list[float | None]) -> None:
        self.clocks = clocks

    def server_clock(self, conn: object) -> float | None:
        return self.clocks.pop(0)


def offset_of(ours: list[float], clocks: list[float | None]) -> float:
    readings = iter(ours)
    return census._clock_offset(FakeServer(clocks), object(),  # type: ignore[arg-type]
                                now=lambda: next(readings))


def test_the_quickest_round_trip_sets_the_offset():
    # round trips of 200, 10 and 100 ms; only the 10 ms one is read to within 5 ms
    ours = [100.0, 100.2, 101.0, 101.01, 102.0, 102.1]
    clocks = [110.17, 111.005, 112.09]
    assert offset_of(ours, clocks) == pytest.approx(10.0)


def test_a_server_without_a_clock_reading_gives_no_offset():
    assert offset_of([100.0, 100.1], [None]) == 0.0
