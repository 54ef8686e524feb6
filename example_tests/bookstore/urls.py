"""URL routes of the example bookstore."""

from django.urls import path

from catalog import views as catalog_views
from orders import views as order_views

urlpatterns = [
    path("books/", catalog_views.book_list),
    path("authors/<int:author_id>/", catalog_views.author_detail),
    path("shelf/", catalog_views.shelf),
    path("orders/<int:order_id>/", order_views.order_summary),
]
