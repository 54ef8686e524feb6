"""Orders of the example bookstore: customers, orders, order lines and stock."""

from django.db import models

from catalog.models import Book


class Customer(models.Model):
    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    placed_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=20, default="open")


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    book = models.ForeignKey(Book, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField(default=1)


class StockItem(models.Model):
    book = models.OneToOneField(Book, on_delete=models.CASCADE, related_name="stock")
    on_hand = models.IntegerField(default=0)
    reserved = models.IntegerField(default=0)
