"""lock-wait outside stress mode (PostgreSQL): a test's own threads waiting on each other."""

from __future__ import annotations

import json

import pytest

from tests.lifecycle_support import line_of

TESTS = """
import threading
import time

import pytest
from django.db import connection, transaction
from shop.models import Author


def hold_row_lock(pk, locked, seconds):
    try:
        with transaction.atomic():
            Author.objects.select_for_update().get(pk=pk)
            locked.set()
            time.sleep(seconds)  # a slow call while the row lock is held
    finally:
        connection.close()


def start_holder(pk, seconds):
    locked = threading.Event()
    holder = threading.Thread(target=hold_row_lock, args=(pk, locked, seconds),
                              name="report-holder")
    holder.start()
    assert locked.wait(10)
    return holder


@pytest.mark.django_db(transaction=True)
def test_waits_for_the_holder():
    author = Author.objects.create(name="a")
    holder = start_holder(author.pk, 1.0)
    Author.objects.filter(pk=author.pk).update(name="b")
    holder.join()


@pytest.mark.django_db(transaction=True)
def test_holder_done_first():
    author = Author.objects.create(name="a")
    start_holder(author.pk, 0.0).join()
    Author.objects.filter(pk=author.pk).update(name="b")


@pytest.mark.django_db(transaction=True)
def test_one_connection():
    author = Author.objects.create(name="a")
    Author.objects.filter(pk=author.pk).update(name="b")
"""


@pytest.mark.parametrize("backend", ["postgres"])
def test_lock_wait_between_a_tests_threads(djproject, backend):
    djproject.write_test(TESTS)
    # an alias no test uses that names the server's `postgres` database, where the lock sampler
    # connects: the census must not take the sampler's own connection for the test's leak
    djproject.add_settings(
        'DATABASES["maintenance"] = {**DATABASES["default"], "NAME": "postgres"}')
    report = djproject.path / "dbguard.json"
    result = djproject.run("--dbguard", "-p", "no:randomly", "--dbguard-json", str(report))
    result.assert_outcomes(passed=3)
    findings = {e["nodeid"].split("::")[-1]: e["findings"]
                for e in json.loads(report.read_text())["tests"]}
    # the blocked UPDATE took a second, all of it queued on the lock: lock-wait only, no
    # slow-query for the same statement
    [wait] = findings["test_waits_for_the_holder"]
    assert wait["rule"] == "lock-wait" and wait["action"] == "warn"
    assert wait["message"].startswith("a statement waited ")
    assert wait["message"].endswith(" ms for a lock held by another connection of this test "
                                    "(threshold 200 ms)")
    assert wait["evidence"]["max_wait_ms"] >= 200
    blocked, blocker = wait["evidence"]["lines"]
    update = line_of(TESTS, 'Author.objects.filter(pk=author.pk).update(name="b")')
    assert blocked.startswith("thread MainThread (pid ")
    assert blocked.endswith(f'UPDATE "shop_author" SET "name" = %s WHERE "shop_author"."id" = %s'
                            f" at test_shop.py:{update}")
    select = line_of(TESTS, "select_for_update().get(pk=pk)")
    assert blocker.startswith("blocked by thread report-holder (pid ")
    assert blocker.endswith(f', idle in transaction, last statement: SELECT ... FROM '
                            f'"shop_author" WHERE "shop_author"."id" = %s LIMIT %s FOR UPDATE '
                            f"at test_shop.py:{select}")
    assert findings["test_holder_done_first"] == []
    assert findings["test_one_connection"] == []
