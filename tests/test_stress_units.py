"""Stress mode judges each thread's run of the body on its own: budget, N+1, duplicate, slow.

Every run (thread-round) is a unit of work of its own, so a budget counts one run's queries and
an N+1 or a duplicate is one run's repetition; the same mistake in several runs is one finding
naming how many runs showed it and the worst one. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.djproject import VIEWS
from tests.stress_project import add_inventory, line_of

SERVICES = '''
import time

from django.db import connection
from django.db.backends.signals import connection_created

from shop.models import Author, Book, Publisher, Tag

QUERIES = [
    lambda: Author.objects.count(),
    lambda: Book.objects.count(),
    lambda: Tag.objects.count(),
    lambda: Publisher.objects.count(),
    lambda: Author.objects.exists(),
    lambda: Book.objects.exists(),
    lambda: Tag.objects.exists(),
    lambda: Publisher.objects.exists(),
]


def census(n):
    for query in QUERIES[:n]:
        query()  # census query


def titles(limit):
    return [(book.title, book.author.name)  # lazy author
            for book in Book.objects.order_by("pk")[:limit]]


def same_author(pk, times):
    for _ in range(times):
        Author.objects.get(pk=pk)  # same author


def slow_report(seconds):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])  # sleep


def _sqlite_sleep(sender, connection, **kwargs):
    if connection.vendor == "sqlite":
        connection.connection.create_function("pg_sleep", 1, time.sleep)


connection_created.connect(_sqlite_sleep)
'''

TESTS = '''
import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from shop.models import Author, Book
from shop.services import census, same_author, slow_report, titles


@pytest.fixture
def books(transactional_db):
    authors = [Author.objects.create(name=f"author {i}") for i in range(4)]
    return [Book.objects.create(title=f"book {i}", author=a).pk for i, a in enumerate(authors)]


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
@pytest.mark.query_budget(5)
def test_budget_kept(books):
    census(3)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
@pytest.mark.query_budget(5)
def test_budget_exactly(books):
    census(5)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
@pytest.mark.query_budget(5)
def test_budget_broken(books, dbguard):
    census(8 if dbguard.stress_index == 2 else 7)


@pytest.mark.asyncio
@pytest.mark.stress(threads=4, rounds=2, timeout=20)
@pytest.mark.query_budget(5)
@pytest.mark.django_db(transaction=True)
async def test_async_budget_broken(dbguard):
    # the ORM calls come back to the stressed thread through sync_to_async, in its run
    await sync_to_async(census)(6 if dbguard.stress_index == 3 else 5)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
def test_nplusone(books):
    titles(4)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
def test_two_lazy_loads(books):
    titles(2)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
def test_duplicate(books):
    same_author(Book.objects.get(pk=books[0]).author_id, 3)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
def test_twice(books):
    same_author(Book.objects.get(pk=books[0]).author_id, 2)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
def test_request_nplusone(books):
    Client().get("/books/")


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
def test_author_pages(books):
    # the same author's page three times: three requests, each a unit of its own
    client = Client()
    author_id = Book.objects.get(pk=books[0]).author_id
    for _ in range(3):
        client.get(f"/authors/{author_id}/")


@pytest.mark.stress(threads=4, rounds=1, timeout=20)
def test_slow(transactional_db, dbguard):
    slow_report(1.0 if dbguard.stress_index == 1 else 0.25)


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
def test_fast(transactional_db):
    slow_report(0)
'''

RUNS = "under stress in {n} of {of} runs of the body, the worst in thread {thread} of round {rnd}"


def run_json(project: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
    result = project.run("--dbguard", "--dbguard-stress", "--dbguard-slow-ms", "150",
                         "--dbguard-json", "report.json", "-p", "no:randomly")
    report = json.loads((project.path / "report.json").read_text())
    return result, {t["nodeid"].split("::")[-1]: t for t in report["tests"]}


def rules_of(entry: dict[str, Any]) -> list[str]:
    return [f["rule"] for f in entry["findings"]]


def test_counting_rules_judge_each_run_of_a_stressed_body(djproject, backend):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(TESTS)
    result, tests = run_json(djproject)
    result.assert_outcomes(passed=8, failed=4)
    out = result.stdout.str()
    assert "FAILED test_shop.py::test_budget_broken" in out
    assert "FAILED test_shop.py::test_async_budget_broken" in out
    assert "FAILED test_shop.py::test_nplusone" in out
    assert "FAILED test_shop.py::test_request_nplusone" in out
    for name, entry in tests.items():
        # every run of every test ran: 4 threads x its rounds, none failed
        stress = entry["stress"]
        assert [r["errors"] for r in stress["rounds"]] == [[]] * stress["rounds_planned"], name
        assert "units" not in stress  # the JSON schema of the stress facts is unchanged

    # near misses: per run of the body, 3 and exactly 5 queries are within a budget of 5,
    # however many queries the 4 threads x 2 rounds and the harness (connecting, closing) add
    # and requests of several threads at once are each their own thread's unit: the same
    # page three times is three units, as it is unstressed, never a duplicate
    for name in ("test_budget_kept", "test_budget_exactly", "test_two_lazy_loads", "test_twice",
                 "test_author_pages", "test_fast"):
        assert tests[name]["findings"] == [], name
    assert tests["test_budget_exactly"]["queries"]["call"] >= 8 * 5

    # the budget is per run: one finding, the worst run named, not one per thread and round
    [budget] = tests["test_budget_broken"]["findings"]
    assert (budget["rule"], budget["action"]) == ("budget", "fail")
    assert budget["message"] == ("query budget exceeded: 8 queries > budget 5 (alias default) ("
                                 + RUNS.format(n=8, of=8, thread=2, rnd=1) + ")")
    assert budget["evidence"]["count"] == 8
    assert budget["evidence"]["thread_rounds"] == {"count": 8, "of": 8,
                                                   "worst": {"thread": 2, "round": 1}}
    # the worst run's eight statements, each once, at the line that ran it
    lambdas = [n for n, line in enumerate(SERVICES.splitlines(), 1) if "lambda: " in line]
    assert sorted(int(line.rsplit(":", 1)[1]) for line in budget["evidence"]["lines"][:-1]) \
        == lambdas
    assert all(line.startswith("1× SELECT ") for line in budget["evidence"]["lines"][:-1])
    assert budget["evidence"]["lines"][-1] == RUNS.format(n=8, of=8, thread=2, rnd=1)
    # printed once in the failures, not once per run (the short summary, which pytest leaves
    # untruncated when CI is set, repeats each failure's first line)
    failures = out.split("short test summary info")[0]
    assert failures.count("query budget exceeded: 8 queries > budget 5") == 1

    # an async body: only thread 3's runs break the budget, 2 of 8
    [in_async] = tests["test_async_budget_broken"]["findings"]
    assert in_async["message"] == ("query budget exceeded: 6 queries > budget 5 (alias default) ("
                                   + RUNS.format(n=2, of=8, thread=3, rnd=1) + ")")

    # N+1 in each run: one finding, deduplicated across the 8 runs
    [nplusone] = tests["test_nplusone"]["findings"]
    lazy_site = f"shop/services.py:{line_of(SERVICES, '# lazy author')}"
    assert (nplusone["rule"], nplusone["action"]) == ("nplusone", "fail")
    assert nplusone["message"].startswith("N+1: 4× SELECT ")
    assert nplusone["message"].endswith(
        f" — lazy Book.author at {lazy_site}; use select_related(\"author\") ("
        + RUNS.format(n=8, of=8, thread=0, rnd=1) + ")")
    assert (nplusone["evidence"]["count"], nplusone["evidence"]["site"],
            nplusone["evidence"]["relation"]) == (4, lazy_site, "Book.author")
    assert nplusone["evidence"]["thread_rounds"] == {"count": 8, "of": 8,
                                                     "worst": {"thread": 0, "round": 1}}

    # an N+1 inside a request a thread makes: the request is the unit, in that thread's run
    [in_request] = tests["test_request_nplusone"]["findings"]
    view_line = line_of(VIEWS, 'lines.append(f"{b.title} by {b.author.name}")')
    view_site = f"shop/views.py:{view_line}"
    assert (in_request["rule"], in_request["action"]) == ("nplusone", "fail")
    assert in_request["evidence"]["site"] == view_site
    assert in_request["evidence"]["unit"] == "request GET /books/"
    assert in_request["evidence"]["count"] == 4
    assert in_request["evidence"]["thread_rounds"] == {"count": 8, "of": 8,
                                                       "worst": {"thread": 0, "round": 1}}

    # the same statement three times in each run: one duplicate finding
    [duplicate] = tests["test_duplicate"]["findings"]
    same_site = f"shop/services.py:{line_of(SERVICES, '# same author')}"
    assert (duplicate["rule"], duplicate["action"]) == ("duplicate", "warn")
    assert duplicate["message"].startswith("duplicate query: 3× the same SELECT ")
    assert duplicate["message"].endswith(
        f" with the same parameters at {same_site}; run it once and reuse the result ("
        + RUNS.format(n=8, of=8, thread=0, rnd=1) + ")")
    assert duplicate["evidence"]["sites"] == [same_site]

    # a slow statement in each run: one finding, the slowest run named
    [slow] = tests["test_slow"]["findings"]
    sleep_site = f"shop/services.py:{line_of(SERVICES, '# sleep')}"
    assert (slow["rule"], slow["action"]) == ("slow-query", "warn")
    assert slow["evidence"]["site"] == sleep_site and slow["evidence"]["count"] == 1
    assert slow["evidence"]["ms"] >= 1000
    assert slow["evidence"]["thread_rounds"] == {"count": 4, "of": 4,
                                                 "worst": {"thread": 1, "round": 1}}
    assert slow["message"].startswith("slow query: SELECT pg_sleep(%s) took ")
    assert slow["message"].endswith(
        f" ms (limit 150 ms) at {sleep_site}; check its plan with EXPLAIN ANALYZE and add an "
        "index or fetch less (" + RUNS.format(n=4, of=4, thread=1, rnd=1) + ")")


UNSTRESSED = '''
import pytest

from shop.services import census


@pytest.mark.stress(threads=4, rounds=2, timeout=20)
@pytest.mark.query_budget(5)
def test_budget_broken(transactional_db):
    census(6)
'''


@pytest.mark.parametrize("flags", [(), ("--dbguard-stress",)], ids=["once", "stressed"])
def test_the_budget_finding_is_the_same_stressed_or_not(djproject, flags):
    djproject.write("shop/services.py", SERVICES)
    djproject.write_test(UNSTRESSED)
    # markers alone, no --dbguard: the budget marker turns its rule on
    result = djproject.run("--dbguard-json", "report.json", "-p", "no:randomly", *flags)
    result.assert_outcomes(failed=1)
    [entry] = json.loads((djproject.path / "report.json").read_text())["tests"]
    [finding] = entry["findings"]
    assert finding["message"].startswith(
        "query budget exceeded: 6 queries > budget 5 (alias default)")
    assert ("thread_rounds" in finding["evidence"]) is bool(flags)


TAKE_TURNS = '''
import time

import pytest
from django.db import transaction

from inventory.models import Product


@pytest.fixture
def product(transactional_db):
    return Product.objects.create(sku="A", stock=100).pk


@pytest.mark.stress(threads=3, rounds=2, timeout=20)
def test_take_turns(product):
    with transaction.atomic():
        row = Product.objects.select_for_update().get(pk=product)  # lock
        time.sleep(0.3)
        row.stock -= 1
        row.save(update_fields=["stock"])
'''


def test_waiting_for_another_threads_lock_is_not_a_slow_query(djproject_pg):
    # Each thread holds the row 0.3 s: the second waits 0.3 s, the third 0.6 s for the
    # SELECT ... FOR UPDATE, which is slow in their runs but never in the run that took the
    # lock first. That is lock-wait's finding; slow-query stays quiet.
    add_inventory(djproject_pg)
    djproject_pg.write_test(TAKE_TURNS)
    result, tests = run_json(djproject_pg)
    result.assert_outcomes(passed=1)
    entry = tests["test_take_turns"]
    assert [r["errors"] for r in entry["stress"]["rounds"]] == [[], []]
    assert [rule for rule in rules_of(entry) if rule != "lock-wait"] == []
    lock = f"test_shop.py:{line_of(TAKE_TURNS, '# lock')}"
    waits = [f for f in entry["findings"] if f["rule"] == "lock-wait"]
    assert all(w["evidence"]["waits"][0]["blocked"]["site"] == lock for w in waits)
