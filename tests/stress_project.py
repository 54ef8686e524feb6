"""An `inventory` app for the stress tests: products with stock, as a shop reserving orders has."""

from __future__ import annotations

from typing import Any

MODELS = """\
from django.db import models


class Product(models.Model):
    sku = models.CharField(max_length=20, unique=True)
    stock = models.IntegerField(default=0)
"""

MIGRATION = """\
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Product",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("sku", models.CharField(max_length=20, unique=True)),
                ("stock", models.IntegerField(default=0)),
            ],
        ),
    ]
"""

APPS = """\
from django.apps import AppConfig


class InventoryConfig(AppConfig):
    name = "inventory"
    default_auto_field = "django.db.models.BigAutoField"
"""


def add_inventory(project: Any) -> None:
    """Install the app in a tests.djproject.DjangoProject."""
    project.write("inventory/__init__.py", "")
    project.write("inventory/apps.py", APPS)
    project.write("inventory/models.py", MODELS)
    project.write("inventory/migrations/__init__.py", "")
    project.write("inventory/migrations/0001_initial.py", MIGRATION)
    project.add_settings('INSTALLED_APPS = [*INSTALLED_APPS, "inventory"]')


def line_of(source: str, text: str) -> int:
    """1-based line of the only line containing `text` in a test module as written."""
    lines = [n for n, line in enumerate(source.splitlines(), 1) if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]
