"""Order services of the example bookstore."""

from .models import Order


def order_total_cents(order: Order) -> int:
    """Sum of the order's lines. Deliberately naive: one query per line for its book."""
    total = 0
    for line in order.lines.all():
        total += line.book.price_cents * line.quantity
    return total


def order_total_cents_fast(order: Order) -> int:
    """The same total with the books joined in: one query whatever the number of lines."""
    lines = order.lines.select_related("book")
    return sum(line.book.price_cents * line.quantity for line in lines)
