"""escaped-write over hand-built records: committed, rolled back, own connection, reads."""

from __future__ import annotations

import pytest

from pytest_dbguard.facts import COMMITS, CommitFacts
from pytest_dbguard.rules.escaped import HINT_ESCAPED, check_escaped_write
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

INSERT = 'INSERT INTO "shop_author" ("name") VALUES (\'x\')'
SELECT = 'SELECT "id" FROM "shop_author"'
WORKER_SITE = "tests/test_x.py:20"


def conn(builder: RecordBuilder, thread: str, alias: str = "default") -> int:
    return builder._conns[(alias, "sqlite", thread)]


def facts(builder: RecordBuilder, *, events=(), rolled_back=("default",)) -> CommitFacts:
    return CommitFacts(test_conns=(conn(builder, "MainThread"),), rolled_back=rolled_back,
                       events=tuple(events))


def judge(builder: RecordBuilder, **kwargs):
    builder.fact(COMMITS, facts(builder, **kwargs))
    return list(check_escaped_write(builder.build(), context()))


def base() -> RecordBuilder:
    # the test thread's own connection has one query, so it has a catalog index
    return RecordBuilder().query(SELECT, site="tests/test_x.py:9")


def test_autocommit_write_on_another_thread_escapes():
    builder = base().query(INSERT, times=2, thread="worker", site=WORKER_SITE)
    [finding] = judge(builder)
    assert finding.rule == "escaped-write"
    assert finding.message == (
        "2 writes were committed on another connection while this test's changes are rolled "
        "back at its end: the rows stay in the database and leak into later tests")
    assert finding.evidence["lines"] == [
        f"2× INSERT INTO \"shop_author\" (\"name\") VALUES (...) at {WORKER_SITE} on Django "
        f"connection 'default' of thread worker, committed at once (autocommit)"]
    assert finding.hint == HINT_ESCAPED


def test_atomic_write_escapes_when_its_block_commits():
    builder = base().query(INSERT, thread="worker", site=WORKER_SITE, in_atomic=True)
    worker = conn(builder, "worker")
    [finding] = judge(builder, events=[("call", 2, worker, "commit")])
    assert finding.evidence["lines"][0].endswith("committed when its atomic block ended")


def test_atomic_write_rolled_back_does_not_escape():
    builder = base().query(INSERT, thread="worker", site=WORKER_SITE, in_atomic=True)
    worker = conn(builder, "worker")
    assert judge(builder, events=[("call", 2, worker, "rollback")]) == []


def test_atomic_write_never_committed_does_not_escape():
    builder = base().query(INSERT, thread="worker", site=WORKER_SITE, in_atomic=True)
    assert judge(builder) == []


def test_write_undone_by_rollback_to_savepoint_does_not_escape():
    builder = (base()
               .query('SAVEPOINT "s1"', thread="worker", in_atomic=True)
               .query(INSERT, thread="worker", site=WORKER_SITE, in_atomic=True)
               .query('ROLLBACK TO SAVEPOINT "s1"', thread="worker", in_atomic=True))
    worker = conn(builder, "worker")
    assert judge(builder, events=[("call", 4, worker, "commit")]) == []


def test_write_kept_by_release_savepoint_escapes():
    builder = (base()
               .query('SAVEPOINT "s1"', thread="worker", in_atomic=True)
               .query(INSERT, thread="worker", site=WORKER_SITE, in_atomic=True)
               .query('RELEASE SAVEPOINT "s1"', thread="worker", in_atomic=True))
    worker = conn(builder, "worker")
    [finding] = judge(builder, events=[("call", 4, worker, "commit")])
    assert finding.evidence["count"] == 1


def test_commit_of_another_connection_settles_nothing():
    builder = (base().query(INSERT, thread="worker", site=WORKER_SITE, in_atomic=True)
               .query(SELECT, thread="other"))
    other = conn(builder, "other")
    assert judge(builder, events=[("call", 3, other, "commit")]) == []


def test_write_on_the_test_connection_is_its_own():
    builder = base().query(INSERT, site="tests/test_x.py:10")
    assert judge(builder) == []


def test_reads_and_failed_writes_on_another_thread_do_not_escape():
    builder = (base().query(SELECT, times=3, thread="worker")
               .query(INSERT, thread="worker", error=True))
    assert judge(builder) == []


def test_transactional_test_is_never_judged():
    builder = base().query(INSERT, thread="worker", site=WORKER_SITE)
    assert judge(builder, rolled_back=()) == []


def test_write_on_an_alias_that_is_not_rolled_back():
    builder = base().query(INSERT, thread="worker", alias="other", site=WORKER_SITE)
    assert judge(builder) == []


def test_setup_write_escapes_teardown_write_does_not():
    builder = (base().query(INSERT, thread="worker", site=WORKER_SITE, phase="setup")
               .query(INSERT, thread="worker", site="tests/test_x.py:30", phase="teardown"))
    [finding] = judge(builder)
    assert [line.split(" at ")[1].split(" ")[0] for line in finding.evidence["lines"]] == [
        WORKER_SITE]


def test_without_the_probe_nothing_is_judged():
    builder = base().query(INSERT, thread="worker", site=WORKER_SITE)
    assert list(check_escaped_write(builder.build(), context())) == []


def test_the_rule_fails_by_default_and_needs_the_commit_and_psycopg_probes():
    from pytest_dbguard.rules import SUSPENDED, builtin_registry

    spec = builtin_registry()["escaped-write"]
    assert (spec.default_action, spec.probes, spec.stress) == (
        "fail", {"commits", "psycopg"}, SUSPENDED)


# -- raw psycopg connections ---------------------------------------------------------------------

RAW_SITE = "shop/rawdb.py:7"


def raw_write(phase: str = "call", database: str = "test_db", thread: str = "MainThread"):
    from pytest_dbguard.facts import RawWrite

    return RawWrite(phase=phase, sql="INSERT INTO shop_author(name) VALUES (...)",
                    site=RAW_SITE, thread=thread, connection="a raw psycopg connection",
                    database=database, how="committed by commit()", count=2)


def judge_raw(*writes, rolled_back=("default",), databases=("test_db",)):
    from pytest_dbguard.facts import PSYCOPG, PsycopgFacts

    builder = base()
    builder.fact(PSYCOPG, PsycopgFacts(writes=tuple(writes)))
    builder.fact(COMMITS, CommitFacts(test_conns=(conn(builder, "MainThread"),),
                                      rolled_back=rolled_back, rolled_back_databases=databases))
    return list(check_escaped_write(builder.build(), context()))


def test_raw_write_committed_to_the_rolled_back_database_escapes():
    from pytest_dbguard.rules.escaped import HINT_ESCAPED_RAW

    [finding] = judge_raw(raw_write("setup"), raw_write(thread="worker"))
    assert finding.message.startswith("4 writes were committed on another connection")
    assert finding.evidence["lines"] == [
        f"2× INSERT INTO shop_author(name) VALUES (...) at {RAW_SITE} on a raw psycopg "
        f"connection of thread {thread}, committed by commit()" for thread in ("MainThread",
                                                                                "worker")]
    assert finding.evidence["count"] == 4
    assert finding.hint == HINT_ESCAPED_RAW


@pytest.mark.parametrize("write, rolled_back", [
    (raw_write("teardown"), ("default",)),  # clean-up after the test
    (raw_write(database="other_db"), ("default",)),  # not the database that rolls back
    (raw_write(), ()),  # transactional test: flushed anyway
])
def test_raw_write_near_misses(write, rolled_back):
    assert judge_raw(write, rolled_back=rolled_back) == []


def test_locking_reads_on_another_thread_change_no_row():
    lock = 'SELECT "id" FROM "shop_author" WHERE "shop_author"."id" = 1 FOR UPDATE'
    builder = (base().query(lock, thread="worker", site=WORKER_SITE)
               .query(lock, thread="other", site=WORKER_SITE, in_atomic=True))
    other = conn(builder, "other")
    assert judge(builder, events=[("call", 3, other, "commit")]) == []
