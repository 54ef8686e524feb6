"""Stress mode without PostgreSQL, its options and markers, and its pure parts (unit tests)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_dbguard.backends.postgresql import parse_deadlock_detail, sqlstate_of
from pytest_dbguard.config import rewrite_bare_stress_flag
from pytest_dbguard.events import Finding, TestRecord
from pytest_dbguard.rules import evaluate
from pytest_dbguard.rules.stress import check_stress_hang, deadlock_findings
from pytest_dbguard.stress.facts import DeadlockEvent, HangFacts, StressFacts
from pytest_dbguard.stress.watchdog import _cycles
from tests.stress_project import line_of

THREADS = """
import threading

import pytest
from shop.models import Author

SEEN = []


@pytest.mark.stress(threads=3, rounds=2, timeout=5)
@pytest.mark.django_db(transaction=True)
def test_index(dbguard):
    SEEN.append((dbguard.stress_index, threading.current_thread().name))
    Author.objects.filter(name="x").exists()


def test_seen():
    assert sorted(SEEN) == [(i, f"dbguard-stress-{i}") for i in (0, 0, 1, 1, 2, 2)]


@pytest.mark.stress(threads=3, rounds=1, timeout=5)
@pytest.mark.django_db(transaction=True)
def test_thread_two_fails(dbguard):
    assert dbguard.stress_index != 2, "thread two is unlucky"  # fails
"""


def test_threads_run_and_fail_with_their_index_without_postgres(djproject):
    djproject.write_test(THREADS)
    result = djproject.run("--dbguard", "--dbguard-stress", "--dbguard-stress-seed", "42",
                           "--dbguard-json", "report.json", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert ("dbguard stress: threads=per marker, rounds=per marker, timeout=per marker, "
            "scope=marked, lock-wait=200 ms, seed=42 (repeat with --dbguard-stress-seed=42)") in out
    assert "stress: 1 of 3 thread runs failed (3 threads x 1 rounds, seed 42)" in out
    line = line_of(THREADS, "# fails")
    assert ("round 1, thread 2: AssertionError: thread two is unlucky  "
            f"at test_shop.py:{line}") in out
    assert "thread 2 (round 1) traceback:" in out
    assert ("stress mode: lock analysis needs PostgreSQL (this run uses sqlite); threads ran and "
            "their errors are reported.") in out
    tests = {t["nodeid"].split("::")[-1]: t
             for t in json.loads((djproject.path / "report.json").read_text())["tests"]}
    stress = tests["test_index"]["stress"]
    assert stress["rounds_run"] == 2 and stress["threads"] == 3 and stress["seed"] == 42
    assert stress["vendor"] == "sqlite" and stress["lock_analysis"].startswith(
        "lock analysis needs PostgreSQL")
    assert [r["errors"] for r in stress["rounds"]] == [[], []]
    # six runs of one statement from one line are stress repetition, not a loop or a duplicate:
    # the query-count rules judge the unstressed run
    assert tests["test_index"]["queries"]["call"] == 6
    assert tests["test_index"]["findings"] == []
    failed = tests["test_thread_two_fails"]["stress"]["rounds"][0]["errors"]
    assert [(e["thread"], e["type"], e["site"]) for e in failed] == [
        (2, "AssertionError", f"test_shop.py:{line}")]
    # every connection the stressed threads opened was closed by the plugin
    opened = [c for c in tests["test_index"]["connections"]["details"]
              if c["thread"].startswith("dbguard-stress-")]
    assert len(opened) == 6 and all(c["closed"] for c in opened)


ONCE = """
import pytest

RUNS = []


@pytest.mark.stress(threads=3)
@pytest.mark.django_db(transaction=True)
def test_once(dbguard):
    RUNS.append(dbguard.stress_index)


def test_ran_once():
    assert RUNS == [None]
"""


def test_without_the_flag_marked_tests_run_once(djproject):
    djproject.write_test(ONCE)
    result = djproject.run("--dbguard", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert "dbguard stress:" not in result.stdout.str()


USAGE = """
import pytest


@pytest.mark.stress
def test_wrapped(db):
    pass


@pytest.mark.stress(threads=0)
@pytest.mark.django_db(transaction=True)
def test_no_threads():
    pass


@pytest.mark.stress(workers=2)
@pytest.mark.django_db(transaction=True)
def test_unknown_keyword():
    pass


@pytest.mark.stress(timeout="5")
@pytest.mark.django_db(transaction=True)
def test_timeout_text():
    pass
"""


def test_marker_misuse_gets_a_message_with_the_signature(djproject):
    djproject.write_test(USAGE)
    result = djproject.run("--dbguard-stress", "-p", "no:randomly")
    result.assert_outcomes(failed=4)
    out = result.stdout.str()
    assert ("@pytest.mark.stress needs real commits, but this test runs inside pytest-django's "
            "wrapping transaction (the `db` fixture or @pytest.mark.django_db), which the other "
            "threads cannot see. Use @pytest.mark.django_db(transaction=True) or the "
            "`transactional_db` fixture.") in out
    signature = "Expected @pytest.mark.stress(threads=4, rounds=3, timeout=10.0)."
    assert f"invalid @pytest.mark.stress: threads must be 1 or more, got 0. {signature}" in out
    assert ("invalid @pytest.mark.stress: stress() got an unexpected keyword argument 'workers'. "
            f"{signature}") in out
    assert ("invalid @pytest.mark.stress: timeout must be a number of seconds, got '5'. "
            f"{signature}") in out


SCOPE = """
import pytest

from shop.models import Author

RUNS = []


@pytest.mark.django_db(transaction=True)
def test_transactional(dbguard):
    RUNS.append(("transactional", dbguard.stress_index))
    Author.objects.exists()


def test_wrapped(db, dbguard):
    RUNS.append(("wrapped", dbguard.stress_index))


@pytest.mark.stress(threads=5, rounds=1)
@pytest.mark.django_db(transaction=True)
def test_marked(dbguard):
    RUNS.append(("marked", dbguard.stress_index))


def test_runs():
    assert sorted(RUNS) == sorted(
        [("transactional", i) for i in (0, 1) for _ in range(3)]
        + [("wrapped", None)] + [("marked", i) for i in (0, 1)])
"""


def test_scope_all_and_thread_count_from_the_command_line(djproject):
    djproject.write_test(SCOPE)
    # a bare --dbguard-stress followed by a path: the path is a path, threads come from markers;
    # --dbguard-stress 2 then overrides every marker's thread count
    result = djproject.run("--dbguard-stress-scope=all", "--dbguard-stress", "2",
                           "test_shop.py", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    assert "dbguard stress: threads=2, rounds=per marker" in result.stdout.str()


def test_bare_flag_before_a_path_keeps_the_path(djproject):
    three_rounds_of_three = "sorted(RUNS) == [0, 0, 0, 1, 1, 1, 2, 2, 2]"
    djproject.write_test(ONCE.replace("RUNS == [None]", three_rounds_of_three))
    result = djproject.run("--dbguard-stress", "test_shop.py", "-p", "no:randomly")
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize(("args", "message"), [
    (("--dbguard-stress=0",), "dbguard: --dbguard-stress=N needs N of 1 or more, got 0."),
    (("--dbguard-stress=many",), "dbguard: --dbguard-stress expects a number of threads, got "
                                 "'many'. Write --dbguard-stress (threads from each stress "
                                 "marker) or --dbguard-stress=N."),
    (("--dbguard-stress", "--dbguard-stress-timeout", "0"),
     "dbguard: --dbguard-stress-timeout must be more than 0 seconds, got 0.0."),
])
def test_bad_options_are_usage_errors(djproject, args, message):
    djproject.write_test(ONCE)
    result = djproject.run(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


# -- pure parts --------------------------------------------------------------------------------

def test_rewrite_bare_stress_flag():
    args = ["--dbguard-stress", "tests/", "--dbguard-stress", "3", "--dbguard-stress", "-x",
            "--", "--dbguard-stress", "x"]
    rewrite_bare_stress_flag(args)
    assert args == ["--dbguard-stress=", "tests/", "--dbguard-stress", "3", "--dbguard-stress",
                    "-x", "--", "--dbguard-stress", "x"]


class FakeDiag:
    message_detail = ("Process 11 waits for ShareLock on transaction 7; blocked by process 12.\n"
                      "Process 12 waits for ExclusiveLock on tuple (0,3) of relation 16390 of "
                      "database 5; blocked by process 11.")
    context = 'while updating tuple (0,2) in relation "inventory_product"'


class FakeDeadlock(Exception):
    sqlstate = "40P01"
    diag = FakeDiag()


def test_deadlock_detail_is_parsed_through_djangos_wrapper():
    try:
        try:
            raise FakeDeadlock("deadlock detected")
        except FakeDeadlock as driver:
            raise RuntimeError("deadlock detected") from driver
    except RuntimeError as wrapped:
        exc = wrapped
    assert sqlstate_of(exc) == "40P01"
    assert parse_deadlock_detail(exc) == {
        "waits": [
            {"pid": 11, "mode": "ShareLock", "object": "transaction 7", "blocker": 12},
            {"pid": 12, "mode": "ExclusiveLock",
             "object": "tuple (0,3) of relation 16390 of database 5", "blocker": 11},
        ],
        "pids": [11, 12],
        "relation": "inventory_product",
        "row": "(0,2)",
    }


def test_cycles_of_the_wait_for_graph():
    def node(*blocked_by: int) -> dict:
        return {"blocked_by": list(blocked_by)}

    # 1 <-> 2 deadlock, 3 -> 4 -> 5 -> 3 three-way, 6 waits on the first cycle, 7 on an
    # unknown backend 99
    nodes = {1: node(2), 2: node(1), 3: node(4), 4: node(5), 5: node(3), 6: node(1), 7: node(99)}
    assert _cycles(nodes) == [(1, 2), (3, 4, 5)]
    assert _cycles({1: node(2), 2: node()}) == []


def side(thread: int, pid: int, blocker: int) -> dict:
    return {"pid": pid, "thread": thread, "state": "active", "site": "shop.py:9",
            "sql": "UPDATE t SET x = %s", "blocked_by": [blocker],
            "waits_for": {"locktype": "transactionid", "mode": "ShareLock",
                          "object": "transaction 5", "relation": "t", "row": "(0,1)"}}


def deadlock_event(round_index: int, propagated: bool) -> DeadlockEvent:
    return DeadlockEvent(round=round_index, thread=1, at_ms=250.0, site="shop.py:9",
                         sql="UPDATE t SET x = %s", detail={}, victim_pid=21,
                         propagated=propagated, sides=(side(0, 20, 21), side(1, 21, 20)),
                         seen_by_watchdog=True, seen_after_ms=60.0)


def stress_facts(**given: Any) -> StressFacts:
    return StressFacts(**{"threads": 2, "rounds_planned": 3, "rounds_run": 3, "timeout_s": 5.0,
                          "seed": 1, "is_async": False, "vendor": "postgresql",
                          "lock_analysis": "on", "lock_wait_ms": 200, **given})


def test_retried_deadlock_stays_a_warning_under_a_failing_rule():
    stress = stress_facts(deadlocks=(deadlock_event(1, False), deadlock_event(2, True),
                                     deadlock_event(3, True)))
    found = deadlock_findings(stress, "t.py::test")
    assert [(f.action, f.evidence["rounds"]) for f in found] == [("warn", [1]), ("fail", [2, 3])]
    record = TestRecord("t.py::test", {}, facts={"stress": stress})
    stamped = evaluate(record, context=_context(), actions={"deadlock": "fail"}, allowed={})
    assert [f.action for f in stamped] == ["warn", "fail"]
    # the configured action still caps a finding: warn everywhere means no failure
    stamped = evaluate(record, context=_context(), actions={"deadlock": "warn"}, allowed={})
    assert [f.action for f in stamped] == ["warn", "warn"]
    assert found[1].render().splitlines()[:3] == [
        "[dbguard:deadlock] deadlock between 2 threads in 2 of 3 rounds (PostgreSQL 40P01, "
        "propagated to the test)",
        "    thread 0 (pid 20) at shop.py:9: UPDATE t SET x = %s",
        "        waits for ShareLock on transaction 5 (row (0,1) of t), held by thread 1 (pid 21)",
    ]


def _context():
    from pytest_dbguard.rules import TestContext

    return TestContext(nodeid="t.py::test")


def test_hang_message_without_postgres():
    hang = HangFacts(
        round=2, timeout_s=1.5, stuck_threads=(1,),
        stacks={"0": [], "1": [f"t.py:{n} in f{n}: pass" for n in range(1, 15)]},
        graph=None, cancelled_pids=(), terminated_pids=(), abandoned_threads=(1,),
        ended_after_ms=1500.4,
        lock_analysis="lock analysis needs PostgreSQL (this run uses sqlite)")
    record = TestRecord("t.py::test", {}, facts={"stress": stress_facts(hang=hang)})
    [finding] = check_stress_hang(record, _context())
    assert isinstance(finding, Finding)
    assert finding.message == ("stress round 2 of 3 did not finish within 1.5 s: thread 1 stuck; "
                               "the round ended after 1.5 s")
    lines = finding.evidence["lines"]
    assert lines[0] == ("no backend was cancelled: lock analysis needs PostgreSQL (this run uses "
                        "sqlite)")
    assert lines[1:4] == ["thread 1 was at (innermost last):", "    ... 4 outer frames",
                          "    t.py:5 in f5: pass"]
    assert lines[-2] == "    t.py:14 in f14: pass"
    assert lines[-1].startswith("thread 1 did not return even after their backends were stopped")
