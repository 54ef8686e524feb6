"""The stress watchdog's bookkeeping on scripted samples (no database): which call site a
sample keeps, and how a deadlock PostgreSQL reported is matched to the waits the watchdog saw."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_dbguard.backends import LockMonitor, SessionSample
from pytest_dbguard.stress.watchdog import Backend, BackendRegistry, Watchdog

pytestmark = pytest.mark.unit

STARTED = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
LOCK = {"locktype": "transactionid", "mode": "ShareLock", "object": "transaction 7",
        "relation": "inventory_product", "row": "(0,1)"}


def session(pid: int, *blocked_by: int, sql: str = "UPDATE t SET x = 1 WHERE id = 2",
            statement_start: float = 100.0) -> SessionSample:
    return SessionSample(pid=pid, state="active", sql=sql, statement_start=statement_start,
                         blocked_by=blocked_by, waits_for=dict(LOCK) if blocked_by else None,
                         wait_s=0.05 if blocked_by else None, database="test_db",
                         session_start=STARTED)


class ScriptedMonitor(LockMonitor):
    """Returns one scripted sample per call; records what it was asked to signal."""

    def __init__(self, samples: list[list[SessionSample]]) -> None:
        self.samples: Iterator[list[SessionSample]] = iter(samples)
        self.signalled: list[tuple[bool, list[tuple[int, str, Any]]]] = []

    def sample(self, pids: list[int]) -> list[SessionSample]:
        return [row for row in next(self.samples) if row.pid in pids]

    def signal(self, terminate: bool, seen: list[tuple[int, str, Any]]) -> list[int]:
        self.signalled.append((terminate, seen))
        return [pid for pid, _, _ in seen]

    def close(self) -> None:
        pass


def watchdog(samples: list[list[SessionSample]], site_of: Any = None) -> Watchdog:
    registry = BackendRegistry()
    for thread, pid in enumerate((10, 11)):
        registry.add(Backend(pid=pid, thread=thread, ident=1000 + thread, alias="default",
                             round=1))
    dog = Watchdog({"dbname": "test_db"}, registry,
                   site_of=site_of or (lambda frame: "test_shop.py:23"))
    dog._monitor = ScriptedMonitor(samples)
    dog.begin_round(1, 0.0)
    return dog


def test_a_deadlock_sampled_at_once_is_the_cycle():
    dog = watchdog([[session(10, 11), session(11, 10)]])
    dog.sample()
    cycle = dog.cycle_for(1, 10, [10, 11])
    assert cycle is not None
    assert [(s["pid"], s["thread"], s["blocked_by"], s["site"]) for s in cycle["sides"]] == [
        (10, 0, [11], "test_shop.py:23"), (11, 1, [10], "test_shop.py:23")]


def test_deadlock_sides_sampled_apart_make_the_cycle_postgresql_reported():
    # thread 0 waits first; thread 1 joins the cycle in between two samples, and the deadlock
    # check ends it before any sample catches both waiting at once
    dog = watchdog([[session(10, 11), session(11, statement_start=90.0)],
                    [session(10, statement_start=101.0), session(11, 10)]])
    dog.sample()
    dog.sample()
    assert dog.cycle_for(1, None, []) is None  # without PostgreSQL's pair: nothing to join
    cycle = dog.cycle_for(1, 10, [10, 11])
    assert cycle is not None and cycle["pids"] == [10, 11]
    assert [(s["pid"], s["blocked_by"], s["waits_for"]["mode"]) for s in cycle["sides"]] == [
        (10, [11], "ShareLock"), (11, [10], "ShareLock")]
    # the waits in the deadlock are explained by it, not reported as lock waits as well
    assert dog.lock_waits(0) == []
    assert dog.cycle_for(1, 10, [10, 11]) is cycle


def test_a_side_never_seen_waiting_leaves_the_deadlock_to_postgresqls_detail():
    dog = watchdog([[session(10, 11), session(11)]])
    dog.sample()
    assert dog.cycle_for(1, 10, [10, 11]) is None
    # the wait of the side that was seen is still a lock wait of its own
    assert [w["blocked"]["pid"] for w in dog.lock_waits(0)] == [10]
    # a wait on a backend outside the reported pair does not complete it either
    dog = watchdog([[session(10, 11), session(11, 12)]])
    dog.sample()
    assert dog.cycle_for(1, 10, [10, 11]) is None


def test_a_thread_that_moved_during_the_sample_lends_no_line():
    lines = iter(["test_shop.py:23", "test_shop.py:30",   # before: 10 blocked, 11 blocked
                  "test_shop.py:23", "test_shop.py:23",   # after: 11 already moved on
                  "test_shop.py:23", "test_shop.py:30",
                  "test_shop.py:23", "test_shop.py:30"])
    dog = watchdog([[session(10, 11), session(11, 10)], [session(10, 11), session(11, 10)]],
                   site_of=lambda frame: next(lines))
    graph = dog.sample()
    assert graph is not None
    assert {n["pid"]: n["site"] for n in graph["nodes"]} == {10: "test_shop.py:23", 11: None}
    # a later sample where the line held still fills in the one the first look missed
    dog.sample()
    cycle = dog.cycle_for(1, 10, [10, 11])
    assert cycle is not None
    assert [s["site"] for s in cycle["sides"]] == ["test_shop.py:23", "test_shop.py:30"]


def test_only_sessions_seen_and_opened_by_stressed_threads_are_signalled():
    dog = watchdog([[session(10), session(11)]])
    dog.registry.add(Backend(pid=12, thread=-1, ident=1, alias="default", round=1))
    dog.sample()
    monitor = dog._monitor
    assert isinstance(monitor, ScriptedMonitor)
    assert dog.cancel([10, 12, 99]) == [10]  # 12: the main thread's; 99: never seen
    assert dog.terminate([11]) == [11]
    assert monitor.signalled == [(False, [(10, "test_db", STARTED)]),
                                 (True, [(11, "test_db", STARTED)])]
