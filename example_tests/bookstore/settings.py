"""Settings of the example bookstore: SQLite by default, PostgreSQL when DATABASE_URL is set."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "bookstore.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "catalog",
    "orders",
]

MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]

if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": BASE_DIR / "bookstore.sqlite3",
            # a file, not the in-memory default: threads (tests/test_lifecycle_examples.py)
            # need a database they can share and connections Django lets them close
            "TEST": {"NAME": BASE_DIR / "test_bookstore.sqlite3"},
        }
    }

# A read replica: same server in this example; in tests it mirrors the default database, and
# `--dbguard-readonly-alias replica` (pytest.ini) makes any write through it a finding.
DATABASES["replica"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
