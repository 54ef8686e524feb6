"""lock-wait outside stress over hand-built sampler facts: threshold, blockers, call sites."""

from __future__ import annotations

import pytest

from pytest_dbguard.facts import LOCK_WAITS, LockHolder, LockWait
from pytest_dbguard.rules.stress import LOCK_WAIT_HINT, check_lock_wait
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

UPDATE = 'UPDATE "shop_author" SET "name" = %s WHERE "shop_author"."id" = %s'
LOCK = 'SELECT "id" FROM "shop_author" WHERE "shop_author"."id" = %s FOR UPDATE'


def wait(ms: float, sql: str = UPDATE) -> LockWait:
    return LockWait(10, sql, ms, (LockHolder(11, "idle in transaction", LOCK, thread="worker"),),
                    thread="MainThread")


def judge(*waits: LockWait, **options) -> list:
    record = (RecordBuilder()
              .query("UPDATE \"shop_author\" SET \"name\" = 'b' WHERE \"shop_author\".\"id\" = 1",
                     site="shop/views.py:30")
              .query('SELECT "id" FROM "shop_author" WHERE "shop_author"."id" = 1 FOR UPDATE',
                     thread="worker", site="shop/jobs.py:12")
              .fact(LOCK_WAITS, list(waits)).build())
    return list(check_lock_wait(record, context(**options)))


def test_a_wait_at_the_threshold_fires_with_both_sides_and_their_sites():
    [finding] = judge(wait(200.0))
    assert finding.message == ("a statement waited 200 ms for a lock held by another "
                               "connection of this test (threshold 200 ms)")
    assert finding.evidence["lines"] == [
        f"thread MainThread (pid 10) waited 200 ms: {UPDATE} at shop/views.py:30",
        "blocked by thread worker (pid 11), idle in transaction, last statement: "
        'SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s FOR UPDATE at '
        "shop/jobs.py:12"]
    assert finding.hint == LOCK_WAIT_HINT


def test_a_shorter_wait_does_not_fire():
    assert judge(wait(199.0)) == []


def test_the_threshold_is_the_option():
    assert judge(wait(150.0), lock_wait_ms=100) != []


def test_no_sampling_no_finding():
    assert judge() == []


def test_raw_connections_are_named_with_their_sites():
    from pytest_dbguard.facts import PSYCOPG, PsycopgFacts, RawStatement

    raw_update = "UPDATE shop_author SET name = %s WHERE id = %s"
    raw_wait = LockWait(12, raw_update, 400.0, (
        LockHolder(13, "idle in transaction", LOCK,
                   connection="a connection of psycopg-pool 'jobs'"),),
        thread="raw-worker", connection="a raw psycopg connection")
    record = (RecordBuilder()
              .query('SELECT "id" FROM "shop_author" WHERE "shop_author"."id" = 1 FOR UPDATE',
                     site="shop/jobs.py:12")
              .fact(PSYCOPG, PsycopgFacts(statements=(
                  RawStatement("call", "UPDATE shop_author SET name = $1 WHERE id = $2",
                               "shop/raw.py:8", "raw-worker", False),
                  # the same shape in another thread is not this wait's site
                  RawStatement("call", raw_update, "shop/other.py:3", "MainThread", False))))
              .fact(LOCK_WAITS, [raw_wait]).build())
    [finding] = check_lock_wait(record, context())
    assert finding.evidence["lines"] == [
        f"a raw psycopg connection of thread raw-worker (pid 12) waited 400 ms: {raw_update} at "
        "shop/raw.py:8",
        "blocked by a connection of psycopg-pool 'jobs' (pid 13), idle in transaction, last "
        'statement: SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s FOR UPDATE']


def slow_findings(duration_ms: float, *waits: LockWait) -> list:
    from pytest_dbguard.rules.shape import check_slow_query

    record = (RecordBuilder()
              .query("UPDATE \"shop_author\" SET \"name\" = 'b' WHERE \"shop_author\".\"id\" = 1",
                     site="shop/views.py:30", vendor="postgresql", duration_ms=duration_ms)
              .fact(LOCK_WAITS, list(waits)).build())
    return [f.evidence["site"] for f in check_slow_query(record, context())]


def test_time_queued_on_a_lock_is_not_slow_query():
    # 1000 ms in all, 960 of them seen waiting: the statement took 40 ms of its own
    assert slow_findings(1000, wait(960)) == []
    # a wait lock-wait reports (200 ms and more) is its finding, however long the rest took
    assert slow_findings(1000, wait(250)) == []


def test_slow_after_a_short_wait_or_without_one_is_slow_query():
    # 150 ms seen waiting out of 900 (under lock-wait's 200 ms): 750 ms of its own
    assert slow_findings(900, wait(150)) == ["shop/views.py:30"]
    # but 60 of 150 ms seen waiting: 90 ms of its own, under the 100 ms limit
    assert slow_findings(150, wait(60)) == []
    assert slow_findings(900) == ["shop/views.py:30"]
    # another statement's wait does not excuse this one
    other = wait(900, sql='DELETE FROM "shop_author" WHERE "shop_author"."id" = %s')
    assert slow_findings(900, other) == ["shop/views.py:30"]


def _sampler():
    from pytest_dbguard.recording.lock_sampler import LockSampler
    from pytest_dbguard.recording.recorder import Hub

    return LockSampler(Hub())


def test_a_sample_catching_the_holder_commit_keeps_what_it_did_while_holding():
    """The last sample of a wait can land while the holder commits (the statement that ends
    the wait): the blocker stays described as it was while it held the lock."""
    sampler = _sampler()
    sampler._note(10, UPDATE, 300.0, 11, "idle in transaction", LOCK)
    sampler._note(10, UPDATE, 1000.0, 11, "active", "COMMIT")
    [entry] = sampler._waits.values()
    assert entry["wait_ms"] == 1000.0
    assert entry["blockers"][11]["state"] == "idle in transaction"
    assert entry["blockers"][11]["sql"].endswith("FOR UPDATE")


def test_a_holder_that_moves_on_to_another_statement_is_described_by_it():
    """Near miss: a later sample with a real statement (not the release) replaces the first."""
    sampler = _sampler()
    sampler._note(10, UPDATE, 300.0, 11, "idle in transaction", LOCK)
    sampler._note(10, UPDATE, 600.0, 11, "active", 'UPDATE "shop_book" SET "title" = %s')
    [entry] = sampler._waits.values()
    assert entry["blockers"][11]["state"] == "active"
    assert entry["blockers"][11]["sql"].startswith("UPDATE")
    # a holder first seen committing is still described (nothing better was seen)
    sampler._note(12, UPDATE, 250.0, 13, "active", "COMMIT")
    assert sampler._waits[(12, entry["sql"])]["blockers"][13]["sql"] == "COMMIT"
