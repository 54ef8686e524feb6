"""Catalog reports of the example bookstore: each one hides a query-shape mistake on purpose."""

from django.db import connections

from .models import Author, Book, Publisher


def bestseller_lines():
    """Title and author per book: the author is loaded lazily, once per book (N+1)."""
    return [f"{book.title} by {book.author.name}" for book in Book.objects.order_by("title")]


def shelf_sizes():
    """Books per author: one COUNT per author instead of one annotated query (N+1)."""
    return {author.name: author.books.count() for author in Author.objects.order_by("name")}


def prices_for(isbns):
    """Price per ISBN, fetched one get() at a time (a loop of queries)."""
    return {isbn: Book.objects.get(isbn=isbn).price_cents for isbn in isbns}


def catalogue_lines():
    """Title and author per book for the catalogue export. The publisher is joined for every
    book but never read: left over from when the export printed it (unused-eager-load)."""
    books = Book.objects.select_related("author", "publisher").order_by("title")
    return [f"{book.title}, {book.author.name}" for book in books]


def house_publisher():
    return Publisher.objects.filter(name="Tor Books").first()


def house_titles():
    """Titles from the house publisher, asking for the publisher again for every book."""
    return [book.title for book in Book.objects.order_by("title")
            if book.publisher_id == house_publisher().pk]


def missing_invoice_numbers(up_to):
    """Order numbers never used, up to `up_to`: a full scan of a generated range (slow)."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < %s) "
            "SELECT COUNT(*) FROM seq LEFT JOIN orders_order o ON o.id = seq.n "
            "WHERE o.id IS NULL",
            [up_to],
        )
        return cursor.fetchone()[0]


def mark_featured(book_ids):
    """Flag books as featured, through the queryset the catalog page read from the replica."""
    featured = Book.objects.using("replica").filter(pk__in=book_ids)
    return featured.update(price_cents=999)


def use_reporting_schema():
    """Point this session at the reporting schema: session state PgBouncer will not keep."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SET search_path TO public")
