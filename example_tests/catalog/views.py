"""Catalog views of the example bookstore."""

from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render

from .models import Author, Book


def book_list(request):
    books = Book.objects.select_related("author", "publisher").order_by("title")
    return JsonResponse({
        "books": [
            {"title": b.title, "author": b.author.name,
             "publisher": b.publisher.name if b.publisher else None}
            for b in books
        ]
    })


def author_detail(request, author_id):
    author = get_object_or_404(Author, pk=author_id)
    titles = list(author.books.order_by("title").values_list("title", flat=True))
    return JsonResponse({"name": author.name, "books": titles})


def shelf(request):
    # the template asks each book for its review count: queries while rendering
    return render(request, "catalog/shelf.html", {"books": Book.objects.order_by("title")})
