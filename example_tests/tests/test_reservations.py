"""Stock reservations under parallel checkouts (run with --dbguard-stress on PostgreSQL).

Customers check out at the same moment with the same two books in their carts, added in
opposite order. Run once (without --dbguard-stress) both tests pass: the deadlock only exists
when checkouts overlap, which is what `pytest --dbguard-stress` makes happen.
"""

import os
import threading
import time

import pytest
from django.db import connection

from orders.models import Customer, Order, StockItem
from orders.reservations import recount_stock, reserve_in_cart_order, reserve_in_stock_order

# Stressed tests need real commits: the other threads cannot see a wrapping transaction.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def customer(catalog):
    StockItem.objects.update(on_hand=1000)  # enough copies for every stressed checkout
    return Customer.objects.create(email="reader@example.com", name="Avid Reader")


def cart_of(catalog, dbguard):
    """This thread's cart: odd threads added the two books the other way round."""
    cart = [(catalog[0].pk, 1), (catalog[2].pk, 1)]
    return cart[::-1] if (dbguard.stress_index or 0) % 2 else cart


@pytest.mark.stress(threads=4, rounds=10, timeout=10)
def test_checkout_reserves_in_cart_order(catalog, customer, dbguard):
    order = Order.objects.create(customer=customer)
    reserve_in_cart_order(order.pk, cart_of(catalog, dbguard))
    assert order.lines.count() == 2


@pytest.mark.stress(threads=4, rounds=10, timeout=10)
def test_checkout_reserves_in_stock_order(catalog, customer, dbguard):
    order = Order.objects.create(customer=customer)
    reserve_in_stock_order(order.pk, cart_of(catalog, dbguard))
    assert order.lines.count() == 2


@pytest.mark.skipif(not os.environ.get("DATABASE_URL"), reason="row locks between threads need "
                    "PostgreSQL: set DATABASE_URL to run this example")
def test_checkout_during_stock_recount(catalog, customer):
    # Shows `lock-wait` (PostgreSQL, a warning): the stock recount keeps the book's stock row
    # locked while the warehouse counts the shelf, and a checkout of that book queues behind it.
    book = catalog[0]
    counting = threading.Event()

    def count_shelf(book_id):
        counting.set()
        time.sleep(1)  # the warehouse's API: a second per shelf count
        return 1000

    def recount():
        try:
            recount_stock(book.pk, count_shelf)
        finally:
            connection.close()

    worker = threading.Thread(target=recount, name="stock-recount")
    worker.start()
    assert counting.wait(10)  # the recount holds the row lock from here on
    order = Order.objects.create(customer=customer)
    reserve_in_stock_order(order.pk, [(book.pk, 1)])
    worker.join()
    assert order.lines.count() == 1
