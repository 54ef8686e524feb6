"""In-memory SQLite Django set-up shared by the per-query benchmarks."""

from __future__ import annotations


def setup_django() -> None:
    """Configure Django on an in-memory SQLite database with auth's tables migrated."""
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        USE_TZ=True,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
