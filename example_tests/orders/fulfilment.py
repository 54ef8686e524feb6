"""Order fulfilment of the example bookstore: stock reservations, exports and imports.

Each function carries one database lifecycle mistake the lifecycle rules catch (see
tests/test_lifecycle_examples.py); the comment on each says what goes wrong in production.
"""

import threading

from django.db import IntegrityError, connection, transaction

from .models import Customer, Order, StockItem


def register_customer(email: str, name: str) -> Customer | None:
    """Create a customer, or return None when the email is taken.

    The IntegrityError is caught without a savepoint: inside a request's transaction
    (ATOMIC_REQUESTS, or any caller's atomic block) every later query then fails.
    """
    try:
        return Customer.objects.create(email=email, name=name)
    except IntegrityError:
        return None


def export_orders_in_background(done: threading.Event) -> threading.Thread:
    """Count open orders in a worker thread for a nightly export.

    The thread never closes its connection: each export leaves one more server connection
    behind until the garbage collector happens to run.
    """

    def export() -> None:
        Order.objects.filter(status="open").count()
        done.set()

    worker = threading.Thread(target=export, name="order-export")
    worker.start()
    return worker


def restock(counts: dict[int, int]) -> None:
    """Bulk restock in one transaction, managed by hand.

    Autocommit is switched off and never switched back on: the connection stays inside a
    transaction, holding its row locks, after the function returns.
    """
    transaction.set_autocommit(False)
    for book_id, on_hand in counts.items():
        StockItem.objects.filter(book_id=book_id).update(on_hand=on_hand)


def stock_report() -> dict[str, int]:
    """A sync helper that async views call directly (it should go through sync_to_async)."""
    return {item.book.title: item.on_hand for item in StockItem.objects.select_related("book")}


def import_customers_in_background(rows: list[tuple[str, str]]) -> threading.Thread:
    """Import an uploaded customer list in a worker thread so the upload returns at once.

    The thread writes on its own connection, which commits each row as it goes. A test on the
    rolling-back `db` fixture cannot undo those commits: the customers outlive the test and turn
    up in later ones (or break them on the unique email).
    """

    def run() -> None:
        try:
            for email, name in rows:
                Customer.objects.create(email=email, name=name)
        finally:
            connection.close()

    worker = threading.Thread(target=run, name="customer-import")
    worker.start()
    return worker


def import_customers(rows: list[tuple[str, str]]) -> int:
    """Import a customer list in one transaction, skipping emails that are already taken.

    The IntegrityError is caught inside the atomic block it broke: Django rolls the whole block
    back at its exit, so the function reports customers imported while the database keeps none
    of them (and any insert after the duplicate raises TransactionManagementError).
    """
    imported = 0
    with transaction.atomic():
        for email, name in rows:
            try:
                Customer.objects.create(email=email, name=name)
                imported += 1
            except IntegrityError:
                pass
    return imported
