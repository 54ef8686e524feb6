"""Order views of the example bookstore."""

from django.http import JsonResponse
from django.shortcuts import get_object_or_404

from .models import Order
from .services import order_total_cents


def order_summary(request, order_id):
    order = get_object_or_404(Order.objects.select_related("customer"), pk=order_id)
    return JsonResponse({
        "customer": order.customer.email,
        "total_cents": order_total_cents(order),
    })
