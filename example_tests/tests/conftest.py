"""Fixtures of the example bookstore's tests: a small catalog and one customer's order."""

import pytest

from catalog.models import Author, Book, Publisher
from orders.models import Customer, Order, OrderLine, StockItem


@pytest.fixture
def catalog(db):
    tor = Publisher.objects.create(name="Tor Books")
    le_guin = Author.objects.create(name="Ursula K. Le Guin", country="US")
    jemisin = Author.objects.create(name="N. K. Jemisin", country="US")
    books = [
        Book.objects.create(title="The Dispossessed", isbn="9780061054884", author=le_guin,
                            publisher=tor, price_cents=1599),
        Book.objects.create(title="The Left Hand of Darkness", isbn="9780441478125",
                            author=le_guin, publisher=tor, price_cents=1799),
        Book.objects.create(title="The Fifth Season", isbn="9780316229296", author=jemisin,
                            publisher=None, price_cents=1699),
        Book.objects.create(title="The Obelisk Gate", isbn="9780316229265", author=jemisin,
                            publisher=None, price_cents=1699),
    ]
    for book in books:
        StockItem.objects.create(book=book, on_hand=10)
    return books


@pytest.fixture
def order(catalog):
    customer = Customer.objects.create(email="reader@example.com", name="Avid Reader")
    order = Order.objects.create(customer=customer)
    for book in catalog:
        OrderLine.objects.create(order=order, book=book, quantity=2)
    return order
