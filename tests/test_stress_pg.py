"""Stress mode on a real PostgreSQL (deadlock_timeout=200ms): deadlocks, lock waits, hangs."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.stress_project import add_inventory, line_of

# The test server's deadlock_timeout (tests/pgserver.py); a deadlock must be reported within
# this plus one second of the round's start.
DEADLOCK_TIMEOUT_MS = 200

HEADER = """
import threading
import time

import pytest
from django.db import DatabaseError, OperationalError, transaction
from django.db.models import F

from inventory.models import Product


@pytest.fixture
def skus(transactional_db):
    return [Product.objects.create(sku=sku, stock=100).pk for sku in ("A", "B")]
"""


def run_json(project: Any, *args: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    result = project.run("--dbguard", "--dbguard-json", "report.json", "-p", "no:randomly",
                         *args)
    report = json.loads((project.path / "report.json").read_text())
    return result, {t["nodeid"].split("::")[-1]: t for t in report["tests"]}


def findings(entry: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [f for f in entry["findings"] if f["rule"] == rule]


# Planted: each thread takes its first row, then both meet on a barrier before reaching for the
# other's row, so every round deadlocks however late the OS schedules one of them (a sleep
# instead only deadlocks when the threads happen to start within the sleep of each other).
DEADLOCKS = HEADER + """
BOTH_HOLD_ONE_ROW = threading.Barrier(2)


@pytest.mark.stress(threads=2, rounds=20, timeout=5)
def test_update_order(skus, dbguard):
    first, second = skus if dbguard.stress_index == 0 else skus[::-1]
    with transaction.atomic():
        Product.objects.filter(pk=first).update(stock=F("stock") - 1)
        BOTH_HOLD_ONE_ROW.wait(timeout=4)
        Product.objects.filter(pk=second).update(stock=F("stock") - 1)  # second update


@pytest.mark.stress(threads=2, rounds=20, timeout=5)
def test_select_for_update(skus, dbguard):
    order = skus if dbguard.stress_index == 0 else skus[::-1]
    with transaction.atomic():
        for pk in order:
            product = Product.objects.select_for_update().get(pk=pk)  # lock
            product.stock -= 1
            product.save()
            if pk == order[0]:
                BOTH_HOLD_ONE_ROW.wait(timeout=4)
"""


def test_planted_deadlocks_found_in_every_round(djproject_pg):
    add_inventory(djproject_pg)
    djproject_pg.write_test(DEADLOCKS)
    result, tests = run_json(djproject_pg, "--dbguard-stress")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    update_line = line_of(DEADLOCKS, "# second update")
    lock_line = line_of(DEADLOCKS, "# lock")
    expected_sql = {
        "test_update_order": ('UPDATE "inventory_product" SET "stock" = ("inventory_product".'
                              '"stock" - %s) WHERE "inventory_product"."id" = %s', update_line),
        "test_select_for_update": ('SELECT ... FROM "inventory_product" WHERE '
                                   '"inventory_product"."id" = %s LIMIT %s FOR UPDATE', lock_line),
    }
    for name, (sql, line) in expected_sql.items():
        stress = tests[name]["stress"]
        assert stress["rounds_run"] == 20
        deadlocks = stress["deadlocks"]
        # one victim per round, in every one of the 20 rounds, each reported by PostgreSQL
        # within deadlock_timeout + 1 s of the round's start
        assert sorted(d["round"] for d in deadlocks) == list(range(1, 21))
        assert all(d["propagated"] for d in deadlocks)
        assert max(d["at_ms"] for d in deadlocks) <= DEADLOCK_TIMEOUT_MS + 1000
        # the watchdog saw every cycle: both sides with their thread, SQL and call site
        assert all(d["seen_by_watchdog"] for d in deadlocks), deadlocks
        for deadlock in deadlocks:
            sides = deadlock["sides"]
            assert sorted(side["thread"] for side in sides) == [0, 1]
            assert {side["site"] for side in sides} == {f"test_shop.py:{line}"}
            assert {side["sql"] for side in sides} == {sql}
            assert {side["waits_for"]["relation"] for side in sides} == {"inventory_product"}
            assert {side["waits_for"]["mode"] for side in sides} == {"ShareLock"}
            assert sides[0]["blocked_by"] == [sides[1]["pid"]]
            assert sides[1]["blocked_by"] == [sides[0]["pid"]]
        [finding] = findings(tests[name], "deadlock")
        assert finding["action"] == "fail"
        assert finding["evidence"]["rounds"] == list(range(1, 21))
        assert ("[dbguard:deadlock] deadlock between 2 threads in 20 of 20 rounds "
                "(PostgreSQL 40P01, propagated to the test)") in out
        assert f"at test_shop.py:{line}: {sql}" in out
        # the failure names the failing thread of each round
    # counted in the failure sections only: under CI=true pytest's short summary repeats them
    headlines = [line for line in out.splitlines()
                 if line.startswith("stress: 20 of 40 thread runs failed (2 threads x 20 rounds, "
                                    "seed ")]
    assert len(headlines) == 2
    for line in (line_of(DEADLOCKS, "# second update"), line_of(DEADLOCKS, "# lock")):
        assert re.search(rf"round 1, thread [01]: OperationalError: deadlock detected  at "
                         rf"test_shop.py:{line}\n", out)
    assert "waits for ShareLock on transaction" in out
    assert "(row (0," in out and "of inventory_product), held by thread" in out
    assert not findings(tests["test_update_order"], "stress-hang")


RETRIED = HEADER + """
BOTH_HOLD_ONE_ROW = threading.Barrier(2)


def reserve(first, second, meet):
    with transaction.atomic():
        Product.objects.filter(pk=first).update(stock=F("stock") - 1)
        if meet:  # the first attempt of a round deadlocks, however the threads are scheduled
            BOTH_HOLD_ONE_ROW.wait(timeout=4)
        Product.objects.filter(pk=second).update(stock=F("stock") - 1)  # second update


@pytest.mark.stress(threads=2, rounds=3, timeout=5)
def test_retry(skus, dbguard):
    order = skus if dbguard.stress_index == 0 else skus[::-1]
    for attempt in range(5):
        try:
            reserve(*order, meet=attempt == 0)
            return
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "40P01":
                raise
    pytest.fail("still deadlocking after 5 attempts")


def test_stock_after_retries(skus):
    assert Product.objects.count() == 2
"""


def test_retried_deadlock_is_a_warning(djproject_pg):
    add_inventory(djproject_pg)
    djproject_pg.write_test(RETRIED)
    result, tests = run_json(djproject_pg, "--dbguard-stress")
    result.assert_outcomes(passed=2)
    [finding] = findings(tests["test_retry"], "deadlock")
    assert finding["action"] == "warn"
    assert finding["evidence"]["propagated"] is False
    assert finding["evidence"]["rounds"] == [1, 2, 3]
    line = line_of(RETRIED, "# second update")
    out = result.stdout.str()
    assert ("test_shop.py::test_retry: [deadlock] deadlock between 2 threads in 3 of 3 rounds "
            "(PostgreSQL 40P01, caught and retried by the code)") in out
    assert f"at test_shop.py:{line}: UPDATE \"inventory_product\"" in out
    assert "deadlock: 1 warn" in out
    # an unstressed test is not stressed, and has no stress results
    assert tests["test_stock_after_retries"]["stress"] is None


HANGS = HEADER + """
LOCK = threading.Lock()
LOCK_TAKEN = threading.Event()
ROW_LOCKED = threading.Event()
NEVER = threading.Event()


@pytest.mark.stress(threads=2, rounds=3, timeout=1.0)
def test_python_lock_and_row_lock(skus, dbguard):
    # each thread takes its lock before reaching for the other's: a hang in round 1, whatever
    # the scheduling
    if dbguard.stress_index == 0:
        with transaction.atomic():
            Product.objects.select_for_update().get(pk=skus[0])
            ROW_LOCKED.set()
            LOCK_TAKEN.wait(4)
            with LOCK:  # waits for thread 1
                pass
    else:
        with LOCK:
            LOCK_TAKEN.set()
            ROW_LOCKED.wait(4)
            Product.objects.filter(pk=skus[0]).update(stock=0)  # waits for thread 0


@pytest.mark.stress(threads=2, rounds=1, timeout=0.5)
def test_waits_forever(transactional_db):
    NEVER.wait()  # nothing ever sets it


def test_next_test_runs(skus):
    assert Product.objects.filter(stock=100).count() == 2
"""


def test_hang_is_stopped_and_the_session_goes_on(djproject_pg):
    add_inventory(djproject_pg)
    djproject_pg.write_test(HANGS)
    result, tests = run_json(djproject_pg, "--dbguard-stress")
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    lock_line = line_of(HANGS, "# waits for thread 1")
    update_line = line_of(HANGS, "# waits for thread 0")

    hang = tests["test_python_lock_and_row_lock"]["stress"]["hang"]
    assert hang["round"] == 1 and hang["stuck_threads"] == [0, 1]
    assert hang["ended_after_ms"] <= (1.0 + 2.0) * 1000
    # only thread 1's statement was running: cancelling it released the Python lock and let
    # thread 0 finish; nothing had to be terminated or abandoned
    assert len(hang["cancelled_pids"]) == 1 and hang["terminated_pids"] == []
    assert hang["abandoned_threads"] == []
    assert tests["test_python_lock_and_row_lock"]["stress"]["rounds_run"] == 1
    # innermost frame of each stuck thread: where it waits
    assert hang["stacks"]["0"][-1] == (
        f"test_shop.py:{lock_line} in test_python_lock_and_row_lock: "
        "with LOCK:  # waits for thread 1"
    )
    assert any(f"test_shop.py:{update_line} in test_python_lock_and_row_lock" in frame
               for frame in hang["stacks"]["1"])
    [edge] = hang["graph"]["edges"]
    nodes = {n["pid"]: n for n in hang["graph"]["nodes"]}
    assert nodes[edge["blocked"]]["thread"] == 1
    assert nodes[edge["blocked"]]["site"] == f"test_shop.py:{update_line}"
    assert nodes[edge["blocker"]]["thread"] == 0
    assert nodes[edge["blocker"]]["site"] == f"test_shop.py:{lock_line}"
    assert nodes[edge["blocker"]]["state"] == "idle in transaction"
    assert ("[dbguard:stress-hang] stress round 1 of 3 did not finish within 1 s: threads 0, 1 "
            "stuck; dbguard cancelled pid ") in out
    assert f"thread 1 (pid {edge['blocked']}) at test_shop.py:{update_line} (UPDATE " in out
    assert (f"held by thread 0 (pid {edge['blocker']}) at test_shop.py:{lock_line} "
            "[idle in transaction]") in out
    assert "thread 0 was at (innermost last):" in out
    [finding] = findings(tests["test_python_lock_and_row_lock"], "stress-hang")
    assert finding["action"] == "fail"
    # the statement dbguard cancelled is not blamed on the test as a failure of its own
    assert "thread runs failed" not in out.split("test_waits_forever")[0]

    forever = tests["test_waits_forever"]["stress"]["hang"]
    assert forever["ended_after_ms"] <= (0.5 + 2.0) * 1000
    assert forever["abandoned_threads"] == [0, 1]
    assert any(f"test_shop.py:{line_of(HANGS, '# nothing ever sets it')} in test_waits_forever"
               in frame for frame in forever["stacks"]["0"])
    assert "threads 0, 1 did not return even after their backends were stopped" in out
    assert tests["test_next_test_runs"]["outcome"] == "passed"


NEAR_MISSES = HEADER + """

@pytest.mark.stress(threads=3, rounds=3, timeout=5)
def test_consistent_order(skus, dbguard):
    first, second = sorted(skus)
    with transaction.atomic():
        Product.objects.filter(pk=first).update(stock=F("stock") - 1)
        time.sleep(0.01)
        Product.objects.filter(pk=second).update(stock=F("stock") - 1)


@pytest.mark.stress(threads=4, rounds=3, timeout=5)
def test_skip_locked(skus):
    with transaction.atomic():
        product = (Product.objects.select_for_update(skip_locked=True)
                   .filter(pk__in=skus).order_by("pk").first())
        time.sleep(0.3)
        if product is not None:
            product.stock -= 1
            product.save()


@pytest.mark.stress(threads=4, rounds=3, timeout=5)
def test_nowait_handled(skus):
    try:
        with transaction.atomic():
            product = Product.objects.select_for_update(nowait=True).get(pk=skus[0])
            time.sleep(0.3)
            product.save()
    except DatabaseError:
        pass  # another order is reserving it: the caller tries again later
"""


def test_near_misses_do_not_fire(djproject_pg):
    add_inventory(djproject_pg)
    djproject_pg.write_test(NEAR_MISSES)
    result, tests = run_json(djproject_pg, "--dbguard-stress")
    result.assert_outcomes(passed=3)
    for name, entry in tests.items():
        stress = entry["stress"]
        assert stress["rounds_run"] == 3, name
        assert stress["deadlocks"] == [] and stress["lock_waits"] == [], name
        assert stress["hang"] is None, name
        assert entry["findings"] == [], name
        assert stress["samples"] > 0, name
    # the near miss really met contention: every round some threads got "could not obtain lock"
    nowait = tests["test_nowait_handled"]["stress"]["rounds"]
    assert all(any(e["sqlstate"] == "55P03" for e in r["db_errors"]) for r in nowait)
    # the plugin's own threads closed every connection they opened
    for entry in tests.values():
        threads = [c for c in entry["connections"]["details"]
                   if c["thread"].startswith("dbguard-stress-")]
        assert threads and all(c["closed"] for c in threads)


LOCK_WAIT = HEADER + """
ROW_LOCKED = threading.Event()


@pytest.mark.stress(threads=2, rounds=1, timeout=5)
def test_slow_reservation(skus, dbguard):
    if dbguard.stress_index == 0:
        with transaction.atomic():
            Product.objects.select_for_update().get(pk=skus[0])
            ROW_LOCKED.set()
            time.sleep(0.6)  # holds the row lock
    else:
        ROW_LOCKED.wait(4)  # the update comes once the row is locked, not after a guess
        Product.objects.filter(pk=skus[0]).update(stock=0)  # blocked


@pytest.mark.stress(threads=2, rounds=1, timeout=5)
def test_short_hold(skus, dbguard):
    if dbguard.stress_index == 0:
        with transaction.atomic():
            Product.objects.select_for_update().get(pk=skus[1])
            time.sleep(0.05)
    else:
        time.sleep(0.01)
        Product.objects.filter(pk=skus[1]).update(stock=0)
"""


def test_lock_wait_names_blocker_and_blocked(djproject_pg):
    add_inventory(djproject_pg)
    djproject_pg.write_test(LOCK_WAIT)
    result, tests = run_json(djproject_pg, "--dbguard-stress", "--dbguard-lock-wait-ms", "300")
    result.assert_outcomes(passed=2)
    [finding] = findings(tests["test_slow_reservation"], "lock-wait")
    assert finding["action"] == "warn"
    evidence = finding["evidence"]
    assert 300 <= evidence["max_wait_ms"] <= 1000
    [wait] = evidence["waits"]
    blocked_line = line_of(LOCK_WAIT, "# blocked")
    holder_line = line_of(LOCK_WAIT, "# holds the row lock")
    assert wait["blocked"]["thread"] == 1
    assert wait["blocked"]["site"] == f"test_shop.py:{blocked_line}"
    [blocker] = wait["blockers"]
    assert blocker["thread"] == 0 and blocker["state"] == "idle in transaction"
    assert blocker["site"] == f"test_shop.py:{holder_line}"
    out = result.stdout.str()
    assert "[lock-wait] a statement waited " in out
    assert "for a lock held by another thread (threshold 300 ms; 1 time(s) in 1 round(s))" in out
    assert (f"blocked by thread 0 (pid {blocker['pid']}), idle in transaction at "
            f"test_shop.py:{holder_line}, last statement: SELECT ... FROM \"inventory_product\" "
            "WHERE \"inventory_product\".\"id\" = %s LIMIT %s FOR UPDATE") in out
    # a 50 ms hold is below the threshold
    assert findings(tests["test_short_hold"], "lock-wait") == []
    assert tests["test_short_hold"]["stress"]["lock_waits"] == []


ASYNC = HEADER + """
import asyncio

from asgiref.sync import sync_to_async

SEEN = []


@pytest.mark.asyncio
@pytest.mark.stress(threads=3, rounds=2, timeout=5)
@pytest.mark.django_db(transaction=True)
async def test_async_body(dbguard):
    await sync_to_async(Product.objects.create)(sku=f"S{dbguard.stress_index}-{len(SEEN)}")
    # the loop itself, not its id(): a freed loop's id can be reused by the next one
    SEEN.append((dbguard.stress_index, asyncio.get_running_loop()))


def test_each_thread_had_its_own_loop(transactional_db):
    assert sorted(index for index, _ in SEEN) == [0, 0, 1, 1, 2, 2]
    assert len({id(loop) for _, loop in SEEN}) == 6  # a new loop per thread and round
"""


def test_async_body_runs_one_loop_per_thread(djproject_pg):
    add_inventory(djproject_pg)
    djproject_pg.write_test(ASYNC)
    result, tests = run_json(djproject_pg, "--dbguard-stress")
    result.assert_outcomes(passed=2)
    stress = tests["test_async_body"]["stress"]
    assert stress["async"] is True and stress["rounds_run"] == 2
    threads = [c for c in tests["test_async_body"]["connections"]["details"]
               if c["thread"].startswith("dbguard-stress-")]
    # the ORM calls ran on the stressed threads' own connections, closed at the end
    assert len(threads) == 6 and all(c["closed"] for c in threads)


OWN_THREADS = HEADER + """
from django.db import connection


def opposite_updates(first, second, errors, retry, start, held, committed):
    start.wait()
    for attempt in range(5 if retry else 1):
        try:
            with transaction.atomic():
                Product.objects.filter(pk=first).update(stock=F("stock") - 1)
                if attempt == 0:
                    held.wait(10)  # both threads hold one row: the deadlock is certain
                Product.objects.filter(pk=second).update(stock=F("stock") - 1)  # second update
            committed.set()
            break
        except OperationalError as exc:
            errors.append(exc)
            # retry once the other side committed: retrying at once can take the first row
            # back before the survivor's waiting update gets it, and deadlock a second time
            committed.wait(10)
    connection.close()


def run_pair(skus, retry):
    errors = []
    start = threading.Barrier(2)
    held = threading.Barrier(2)
    committed = threading.Event()
    threads = [threading.Thread(target=opposite_updates,
                                args=(*order, errors, retry, start, held, committed))
               for order in (skus, skus[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_own_threads_deadlock(skus):
    errors = run_pair(skus, retry=False)
    raise errors[0]


def test_own_threads_retry(skus):
    assert len(run_pair(skus, retry=True)) == 1
"""


def test_deadlock_between_the_tests_own_threads_without_stress_mode(djproject_pg):
    add_inventory(djproject_pg)
    djproject_pg.write_test(OWN_THREADS)
    result, tests = run_json(djproject_pg)
    result.assert_outcomes(passed=1, failed=1)
    line = line_of(OWN_THREADS, "# second update")
    [propagated] = findings(tests["test_own_threads_deadlock"], "deadlock")
    assert propagated["action"] == "fail" and propagated["evidence"]["propagated"] is True
    assert propagated["message"] == ("PostgreSQL reported 1 deadlock(s) (40P01, propagated to "
                                     "the test)")
    assert propagated["evidence"]["lines"][0].startswith(
        f"aborted statement at test_shop.py:{line} (Thread-")
    [retried] = findings(tests["test_own_threads_retry"], "deadlock")
    assert retried["action"] == "warn" and retried["evidence"]["propagated"] is False
    assert tests["test_own_threads_retry"]["stress"] is None
