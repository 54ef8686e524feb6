"""Clean catalog tests: each endpoint stays within the query budget its team agreed on."""

import pytest

from catalog.models import Book


@pytest.mark.query_budget(1)
def test_book_list_is_one_query(client, catalog):
    response = client.get("/books/")
    assert response.status_code == 200
    assert [b["title"] for b in response.json()["books"]][:2] == [
        "The Dispossessed", "The Fifth Season"]


@pytest.mark.query_budget(2)
def test_author_page(client, catalog):
    author_id = catalog[0].author_id
    response = client.get(f"/authors/{author_id}/")
    assert response.json()["books"] == ["The Dispossessed", "The Left Hand of Darkness"]


def test_budget_block_around_the_hot_loop(dbguard, catalog):
    with dbguard.budget(1):
        prices = {b.isbn: b.price_cents for b in Book.objects.only("isbn", "price_cents")}
    assert prices["9780316229296"] == 1699
    assert dbguard.count() == 1
