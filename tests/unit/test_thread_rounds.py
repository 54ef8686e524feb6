"""Stressed runs judged one at a time (rules/threadrounds.py) and units per thread-round."""

from __future__ import annotations

import threading

import pytest

from pytest_dbguard.recording.recorder import Hub
from pytest_dbguard.recording.threadrounds import stressed_body
from pytest_dbguard.rules import builtin_registry, evaluate
from pytest_dbguard.rules.budget import Budget
from pytest_dbguard.stress.facts import STRESS, StressFacts, ThreadRoundUnit
from tests.records import APP_SITE, RecordBuilder, context

pytestmark = pytest.mark.unit

BOOK = 'SELECT "id" FROM "book" WHERE "id" = 1'
AUTHOR = 'SELECT "id" FROM "author" WHERE "id" = 1'


def stressed(builder: RecordBuilder, runs: dict[int, tuple[int, int]]) -> RecordBuilder:
    """The builder's rows of unit u belong to the run (thread, round) runs[u]."""
    units = tuple(ThreadRoundUnit(u, thread, rnd) for u, (thread, rnd) in runs.items())
    return builder.fact(STRESS, StressFacts(
        threads=2, rounds_planned=2, rounds_run=2, timeout_s=5.0, seed=1, is_async=False,
        vendor="sqlite", lock_analysis="off", lock_wait_ms=200, units=units))


RUNS = {1: (0, 1), 2: (1, 1), 3: (0, 2), 4: (1, 2)}


def judge(record, **given):
    actions = {spec.id: "off" for spec in builtin_registry()}
    actions.update(given.pop("actions"))
    return evaluate(record, context(**given), actions, {})


def test_a_budget_counts_one_run_and_names_the_worst():
    builder = RecordBuilder()
    for unit, n in ((1, 3), (2, 4), (3, 3), (4, 4)):
        builder.query(BOOK, times=n, unit=unit)
    builder.query(AUTHOR, times=9, unit=0)  # outside every run: the harness, not the body
    record = stressed(builder, RUNS).build()
    assert judge(record, budget=Budget(4), actions={"budget": "fail"}) == []
    [finding] = judge(record, budget=Budget(3), actions={"budget": "fail"})
    assert finding.message == ("query budget exceeded: 4 queries > budget 3 (alias default) "
                               "(under stress in 2 of 4 runs of the body, the worst in thread 1 "
                               "of round 1)")
    assert finding.evidence["thread_rounds"] == {"count": 2, "of": 4,
                                                 "worst": {"thread": 1, "round": 1}}
    # without the stress facts the same rows are one run: 23 queries
    [whole] = judge(RecordBuilder().query(BOOK, times=14).query(AUTHOR, times=9).build(),
                    budget=Budget(3), actions={"budget": "fail"})
    assert whole.evidence["count"] == 23 and "thread_rounds" not in whole.evidence


def test_a_duplicate_is_one_finding_however_many_runs_repeat_it():
    builder = RecordBuilder()
    for unit in RUNS:
        builder.query(BOOK, times=3, unit=unit, params=7)
    [finding] = judge(stressed(builder, RUNS).build(), actions={"duplicate": "warn"})
    assert finding.evidence["count"] == 3 and finding.evidence["sites"] == [APP_SITE]
    assert finding.evidence["thread_rounds"]["count"] == 4
    # twice per run is below the threshold, though the runs together repeat it 8 times
    builder = RecordBuilder()
    for unit in RUNS:
        builder.query(BOOK, times=2, unit=unit, params=7)
    assert judge(stressed(builder, RUNS).build(), actions={"duplicate": "warn"}) == []


def test_a_statement_slow_in_some_runs_only_waited_for_the_others():
    def record(fast_ms: float):
        builder = RecordBuilder()
        for unit, ms in ((1, fast_ms), (2, 250.0), (3, fast_ms), (4, 400.0)):
            builder.query(BOOK, unit=unit, duration_ms=ms)
        return stressed(builder, RUNS).build()

    # the run that took the lock first was fast: the others' time was waiting, lock-wait's
    assert judge(record(5.0), actions={"slow-query": "warn"}) == []
    [finding] = judge(record(150.0), actions={"slow-query": "warn"})
    assert finding.evidence["ms"] == 400.0
    assert finding.evidence["thread_rounds"] == {"count": 4, "of": 4,
                                                 "worst": {"thread": 1, "round": 2}}


def test_requests_of_stressed_threads_are_units_of_their_own_thread_round():
    hub = Hub()
    seen: dict[int, list[int]] = {}
    barrier = threading.Barrier(2)
    with stressed_body(hub, None) as rounds:
        def body(thread: int) -> None:
            with rounds.thread_round(thread, 1):
                units = [rounds.unit_for(None, None)]
                barrier.wait(5)
                hub.begin_unit(f"GET /{thread}/")  # both requests open at once
                barrier.wait(5)
                units.append(rounds.unit_for(None, None))
                hub.end_unit()
                units.append(rounds.unit_for(None, None))
                seen[thread] = units

        threads = [threading.Thread(target=body, args=(i,)) for i in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert hub.unit == 0  # the session-wide unit every tap reads first stays unset
        assert rounds.unit_for(None, None) == 0  # outside every run
    owners = dict((u, (t, r)) for u, t, r in rounds.units())
    for thread, (body_unit, request_unit, after) in seen.items():
        assert body_unit == after != request_unit
        assert owners[body_unit] == owners[request_unit] == (thread, 1)
        assert hub.unit_labels[request_unit] == f"GET /{thread}/"
    assert hub.body is None and hub.thread_units is None
