"""Stock reservations of the example bookstore: copies held for an order until it is paid."""

from collections.abc import Callable

from django.db import transaction

from .models import OrderLine, StockItem


class OutOfStock(Exception):
    """Not enough unreserved copies of a book for an order line."""


def reserve_in_cart_order(order_id: int, lines: list[tuple[int, int]]) -> None:
    """Reserve (book id, quantity) lines in the order the customer put them in the cart.

    Deliberately deadlock-prone: two carts holding the same books in opposite order lock the
    same stock rows in opposite order. Each transaction holds its first row while it records the
    line and goes for the second row, which the other one holds: PostgreSQL aborts one of them
    (40P01) after deadlock_timeout.
    """
    with transaction.atomic():
        for book_id, quantity in lines:
            item = StockItem.objects.select_for_update().get(book_id=book_id)
            if item.on_hand - item.reserved < quantity:
                raise OutOfStock(book_id)
            item.reserved += quantity
            item.save(update_fields=["reserved"])
            OrderLine.objects.create(order_id=order_id, book_id=book_id, quantity=quantity)


def reserve_in_stock_order(order_id: int, lines: list[tuple[int, int]]) -> None:
    """The same reservation without the deadlock: every order locks its rows in one order.

    All stock rows of the order are locked in one statement, sorted by primary key, before any
    is changed; two orders over the same books queue behind each other instead of deadlocking.
    """
    wanted = dict(lines)
    with transaction.atomic():
        items = (StockItem.objects.select_for_update()
                 .filter(book_id__in=wanted).order_by("pk"))
        for item in items:
            quantity = wanted[item.book_id]
            if item.on_hand - item.reserved < quantity:
                raise OutOfStock(item.book_id)
            item.reserved += quantity
            item.save(update_fields=["reserved"])
        OrderLine.objects.bulk_create(
            OrderLine(order_id=order_id, book_id=book_id, quantity=quantity)
            for book_id, quantity in lines
        )


def recount_stock(book_id: int, count_shelf: Callable[[int], int]) -> None:
    """Correct a book's stock from a shelf count made by the warehouse.

    Deliberately slow under its lock: the stock row stays locked (select_for_update) while the
    warehouse counts, so every checkout of that book waits for the count. Asking the warehouse
    first and locking only to write the answer keeps the lock for milliseconds.
    """
    with transaction.atomic():
        item = StockItem.objects.select_for_update().get(book_id=book_id)
        item.on_hand = count_shelf(book_id)
        item.save(update_fields=["on_hand"])
