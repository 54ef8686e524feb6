"""Lifecycle examples: each test shows one rule firing on a realistic mistake in orders.fulfilment.

Run `pytest --dbguard example_tests`: these tests pass without dbguard, which is the point: the
bugs only show up in production (exhausted connections, locks held, broken requests).
"""

import os
import threading

import pytest

from orders.fulfilment import (
    export_orders_in_background,
    import_customers,
    import_customers_in_background,
    register_customer,
    restock,
    stock_report,
)
from orders.models import Customer


@pytest.mark.django_db
def test_register_customer_twice():
    # Shows `swallowed-db-error`: the duplicate email's IntegrityError is caught inside the
    # test's transaction without a savepoint, so that transaction can no longer be used.
    assert register_customer("reader@example.com", "Avid Reader") is not None
    assert register_customer("reader@example.com", "Someone Else") is None


@pytest.mark.django_db(transaction=True)
def test_nightly_export():
    # Shows `connection-leak`: the export thread exits without closing its connection.
    done = threading.Event()
    export_orders_in_background(done).join()
    assert done.is_set()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_stock_report_from_async_code(catalog):
    # Shows `async-orm`: sync ORM code called from async code. Django raises
    # SynchronousOnlyOperation here; dbguard adds where and how to fix it.
    assert stock_report()["The Dispossessed"] == 10


@pytest.mark.skipif(not os.environ.get("DATABASE_URL"), reason="psycopg-pool needs PostgreSQL: "
                    "set DATABASE_URL to run this example")
@pytest.mark.django_db
def test_reporting_pool_too_small():
    # Shows `pool-exhausted`: a reporting job takes a pool connection per customer and never
    # gives the first one back before asking for the next.
    from django.db import connection
    from psycopg_pool import ConnectionPool, PoolTimeout

    base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
    Customer.objects.create(email="a@example.com", name="A")
    with ConnectionPool(f"{base}/{connection.settings_dict['NAME']}", min_size=1, max_size=1,
                        name="reporting", timeout=0.2) as pool:
        first = pool.getconn()
        with pytest.raises(PoolTimeout):
            pool.getconn()
        pool.putconn(first)


@pytest.fixture
def undo_abandoned_transaction():
    # Production has no such safety net. Here it only keeps the example suite's later tests
    # clean: without it the transaction restock() leaves open would also swallow the flush
    # pytest-django runs after the test. Set up after `catalog`, so it is torn down before
    # that flush; dbguard judges the state the test body left, which this cannot hide.
    yield
    from django.db import connection

    if not connection.get_autocommit():
        connection.rollback()
        connection.set_autocommit(True)


@pytest.mark.django_db(transaction=True)
def test_restock(catalog, undo_abandoned_transaction):
    # Shows `open-transaction`: restock() turns autocommit off and never turns it back on.
    restock({catalog[0].pk: 25})


@pytest.mark.django_db
def test_customer_upload():
    # Shows `escaped-write`: the import thread commits on its own connection while this test's
    # changes are rolled back, so its customers stay in the database for the tests after it.
    # The fix here is `@pytest.mark.django_db(transaction=True)`.
    import_customers_in_background([("ursula@example.com", "Ursula"),
                                    ("octavia@example.com", "Octavia")]).join()
    assert Customer.objects.filter(email__in=["ursula@example.com",
                                              "octavia@example.com"]).count() == 2


@pytest.mark.django_db
def test_import_customer_list():
    # Shows `swallowed-db-error` inside the block it broke: the duplicate is skipped with
    # `except IntegrityError: pass` inside atomic, so the whole import is rolled back while
    # import_customers() reports one customer imported.
    Customer.objects.create(email="taken@example.com", name="Taken")
    assert import_customers([("new@example.com", "New"), ("taken@example.com", "Again")]) == 1
