"""lock-wait outside stress (PostgreSQL) with raw psycopg connections and connections older than
the test body: a fixture's raw lock, a raw connection in a worker thread, asgiref's thread."""

from __future__ import annotations

import json
import re

import pytest

from tests.lifecycle_support import line_of

RAW = """
import os
import threading
import time

import psycopg
from django.db import connection, transaction


def dsn():
    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{connection.settings_dict['NAME']}"


def until_waiting(pid, watcher):
    # until the backend `pid` waits on a lock, then one second more (the wait to report)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                              (pid,)).fetchone()
        if row and row[0] == "Lock":
            time.sleep(1.0)
            return
        time.sleep(0.01)
    raise AssertionError(f"backend {pid} never waited")


class RawUpdater(threading.Thread):
    # updates a row on a raw connection of its own; `pid` is known before the update runs
    def __init__(self, pk):
        super().__init__(name="raw-updater")
        self.pk, self.ready = pk, threading.Event()

    def run(self):
        with psycopg.connect(dsn(), autocommit=True) as conn:
            self.pid = conn.info.backend_pid
            self.ready.set()
            conn.execute("UPDATE shop_author SET name = %s WHERE id = %s", ("raw", self.pk))


def lock_row(pk):
    conn = psycopg.connect(dsn())
    conn.execute("SELECT name FROM shop_author WHERE id = %s FOR UPDATE", (pk,))
    return conn


def release_when_waiting(conn, pid):
    def run():
        with psycopg.connect(dsn(), autocommit=True) as watcher:
            until_waiting(pid, watcher)
        conn.commit()

    releaser = threading.Thread(target=run, name="releaser")
    releaser.start()
    return releaser


class Holder(threading.Thread):
    # holds a row lock on this thread's Django connection until `pid` waited on it
    def __init__(self, pk):
        super().__init__(name="holder")
        self.pk, self.locked, self.pid = pk, threading.Event(), None

    def run(self):
        from shop.models import Author

        try:
            with psycopg.connect(dsn(), autocommit=True) as watcher:
                with transaction.atomic():
                    Author.objects.select_for_update().get(pk=self.pk)
                    self.locked.set()
                    while self.pid is None:
                        time.sleep(0.01)
                    until_waiting(self.pid, watcher)
        finally:
            connection.close()
"""

TESTS = """
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from shop import rawlocks
from shop.models import Author


def test_raw_thread_waits_for_django(transactional_db):
    author = Author.objects.create(name="a")
    with transaction.atomic():
        Author.objects.select_for_update().get(pk=author.pk)
        updater = rawlocks.RawUpdater(author.pk)
        updater.start()
        assert updater.ready.wait(30)
        with rawlocks.psycopg.connect(rawlocks.dsn(), autocommit=True) as watcher:
            rawlocks.until_waiting(updater.pid, watcher)
    updater.join()


@pytest.fixture
def raw_lock(transactional_db):
    author = Author.objects.create(name="a")
    conn = rawlocks.lock_row(author.pk)
    yield author, conn
    conn.close()


def test_django_waits_for_a_fixtures_raw_lock(raw_lock):
    author, conn = raw_lock
    releaser = rawlocks.release_when_waiting(conn, connection.connection.info.backend_pid)
    Author.objects.filter(pk=author.pk).update(name="b")
    releaser.join()


@pytest_asyncio.fixture
async def held_in_setup(transactional_db):
    author = await Author.objects.acreate(name="a")
    holder = rawlocks.Holder(author.pk)
    holder.start()
    assert holder.locked.wait(30)
    yield author, holder
    holder.join()
    await sync_to_async(connections.close_all)()


@pytest.mark.asyncio
async def test_asgiref_thread_waits(held_in_setup):
    author, holder = held_in_setup
    holder.pid = await sync_to_async(lambda: connection.connection.info.backend_pid)()
    await Author.objects.filter(pk=author.pk).aupdate(name="b")


def test_raw_reads_under_a_lock(transactional_db):
    author = Author.objects.create(name="a")
    with transaction.atomic():
        Author.objects.select_for_update().get(pk=author.pk)
        with rawlocks.psycopg.connect(rawlocks.dsn(), autocommit=True) as conn:
            conn.execute("SELECT name FROM shop_author WHERE id = %s", (author.pk,)).fetchone()


def test_raw_lock_released_first(raw_lock):
    author, conn = raw_lock
    conn.commit()
    Author.objects.filter(pk=author.pk).update(name="b")
"""

UPDATE_B = 'Author.objects.filter(pk=author.pk).update(name="b")'
PID = re.compile(r"\(pid \d+\)")
WAITED = re.compile(r"waited \d+ ms")
DJANGO_UPDATE = 'UPDATE "shop_author" SET "name" = %s WHERE "shop_author"."id" = %s'
DJANGO_LOCK = ('SELECT ... FROM "shop_author" WHERE "shop_author"."id" = %s LIMIT %s FOR UPDATE')


def lines_of(finding: dict) -> list[str]:
    return [WAITED.sub("waited N ms", PID.sub("(pid N)", line))
            for line in finding["evidence"]["lines"]]


@pytest.mark.parametrize("backend", ["postgres"])
def test_lock_waits_with_raw_and_older_connections(djproject, backend):
    djproject.write("shop/rawlocks.py", RAW)
    djproject.write_test(TESTS)
    report = djproject.path / "dbguard.json"
    result = djproject.run("--dbguard", "-p", "no:randomly", "--dbguard-json", str(report))
    result.assert_outcomes(passed=5)
    findings = {e["nodeid"].split("::")[-1]: [f for f in e["findings"] if f["rule"] == "lock-wait"]
                for e in json.loads(report.read_text())["tests"]}

    def test_line(snippet: str) -> int:
        return line_of(TESTS, snippet)

    def raw_line(snippet: str) -> int:
        return line_of(RAW, snippet)

    expected = {
        "test_raw_thread_waits_for_django": [
            "a raw psycopg connection of thread raw-updater (pid N) waited N ms: UPDATE "
            f"shop_author SET name = %s WHERE id = %s at shop/rawlocks.py:"
            f"{raw_line('UPDATE shop_author SET name')}",
            f"blocked by thread MainThread (pid N), idle in transaction, last statement: "
            f"{DJANGO_LOCK} at test_shop.py:{test_line('select_for_update().get(pk=author.pk)')}"],
        "test_django_waits_for_a_fixtures_raw_lock": [
            f"thread MainThread (pid N) waited N ms: {DJANGO_UPDATE} at test_shop.py:"
            f"{test_line(UPDATE_B)}",
            "blocked by a raw psycopg connection of thread MainThread (pid N), idle in "
            "transaction, last statement: SELECT ... FROM shop_author WHERE id = %s FOR UPDATE "
            f"at shop/rawlocks.py:{raw_line('FOR UPDATE')}"],
        # the asgiref thread's connection was opened by the async fixture, before the body
        "test_asgiref_thread_waits": [
            f"thread ThreadPoolExecutor-0_0 (pid N) waited N ms: {DJANGO_UPDATE} at "
            f"test_shop.py:{test_line('aupdate')}",
            "blocked by thread holder (pid N), idle in transaction, last statement: "
            f"{DJANGO_LOCK} at shop/rawlocks.py:{raw_line('select_for_update')}"],
    }
    assert {name for name, found in findings.items() if found} == set(expected)
    for name, lines in expected.items():
        [wait] = findings[name]
        assert wait["action"] == "warn" and wait["evidence"]["max_wait_ms"] >= 200, name
        assert lines_of(wait) == lines, name
