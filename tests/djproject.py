"""A small real Django project written by pytester, run in a pytest subprocess like a user would.

Fixtures (defined in ``tests/conftest.py``)::

    djproject        DjangoProject on SQLite; on the backend of ``backend`` when the test asks
                     for that fixture too.
    djproject_pg     DjangoProject on PostgreSQL (own database per test).
    backend          "sqlite" / "postgres": a test that requests it runs once per backend.
                     ``@pytest.mark.parametrize("backend", ["postgres"])`` narrows it.
    make_djproject   factory: ``make_djproject(backend="sqlite", extra_settings="")``.
    pg_server        session-wide ``tests.pgserver.PgServer`` (``.dsn``, ``.url_for(dbname)``);
                     skips outside CI, fails under ``CI=true`` when no server can be had.
    pg_dsn           ``pg_server.dsn``: a superuser DSN on the ``postgres`` database.

Typical tests::

    def test_sqlite_only(djproject):
        djproject.write_test('''
            import pytest
            from shop.models import Author

            @pytest.mark.django_db
            def test_it():
                Author.objects.create(name="a")
        ''')
        djproject.run("--dbguard").assert_outcomes(passed=1)

    def test_both(djproject, backend):        # runs on sqlite and on postgres
        ...

    def test_pg_only(djproject_pg):
        result = djproject_pg.run("-n", "2")

``DjangoProject``:

- ``path``, ``pytester``, ``backend``; on PostgreSQL ``db_name`` (``dbg_<hex>``; pytest-django
  creates ``test_dbg_<hex>`` and, under xdist, ``test_dbg_<hex>_gw0`` ...), ``database_url``
  and ``admin_dsn`` (superuser, ``postgres`` database). Those databases are dropped after the
  test, best effort.
- ``write_test(source, name="test_shop.py")``: writes a dedented test module at the project root.
- ``write(relpath, source)``: any file (``"shop/signals.py"``, ``"conftest.py"``, templates).
  ``pytester.makepyfile`` works too: the project root is ``pytester.path``.
- ``add_settings(text)``: appends Python to ``proj/settings.py`` (e.g. a second alias).
- ``run(*args, dbguard=True, timeout=180)``: ``pytester.runpytest_subprocess`` with the env
  prepared: ``DATABASE_URL`` set for PostgreSQL and removed for SQLite, ``PYTHONPATH``,
  ``DJANGO_SETTINGS_MODULE``, ``PYTEST_*`` and xdist worker variables of the outer run removed,
  ``CI`` and coverage's variables passed through. ``dbguard=False`` adds ``-p no:dbguard``.

The project (see ``PROJECT_FILES``): ``pytest.ini`` (``DJANGO_SETTINGS_MODULE = proj.settings``,
``pythonpath = .``, ``-p no:cacheprovider``); ``proj/settings.py`` (DATABASES from
``DATABASE_URL`` via dj_database_url, else a SQLite file; apps contenttypes, auth, shop; templates
with APP_DIRS; ``USE_TZ = True``); ``proj/urls.py``; app ``shop`` with ``Author(name)``,
``Publisher(name)``, ``Tag(name)``, ``Book(title, author -> Author related_name="books",
publisher -> Publisher null, tags -> Tag)`` and its initial migration; views:

    /books/               titles + author names, deliberately N+1 (one query per book)
    /books-fast/          the same with select_related("author"): 1 query
    /books-template/      N+1 hidden in a template ({{ book.author.name }})
    /authors/<id>/        one get()
"""

from __future__ import annotations

import contextlib
import secrets
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest
    from _pytest.pytester import RunResult

    from tests.pgserver import PgServer

BACKENDS = ("sqlite", "postgres")
RUN_TIMEOUT_S = 180.0
# For runs whose reports are compared with another run's: slow-query judges wall time, which on
# a loaded CI machine (coverage tracing, the other xdist worker's PostgreSQL load) now and then
# passes the 100 ms default for one query in one of the runs. Timing is not what those tests are
# about; the slow-query tests set their own threshold.
NO_SLOW_QUERY = ("--dbguard-slow-ms", "600000")

# Variables of the outer run that must not leak into the project's pytest process.
SCRUBBED_ENV = (
    "PYTHONPATH",
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_CONFIGURATION",
    "DATABASE_URL",
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "PYTEST_CURRENT_TEST",
    "DBGUARD_TEST_PG_SESSION",
)

PYTEST_INI = """\
[pytest]
DJANGO_SETTINGS_MODULE = proj.settings
django_find_project = false
pythonpath = .
addopts = -p no:cacheprovider
asyncio_default_fixture_loop_scope = function
"""

SETTINGS = '''\
"""Settings of the throwaway project written by tests/djproject.py."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "pytest-dbguard-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
ROOT_URLCONF = "proj.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "shop",
]
MIDDLEWARE = []
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
            "NAME": BASE_DIR / "db.sqlite3",
        }
    }
'''

URLS = """\
from django.urls import path

from shop import views

urlpatterns = [
    path("books/", views.book_list),
    path("books-fast/", views.book_list_fast),
    path("books-template/", views.book_list_template),
    path("authors/<int:author_id>/", views.author_detail),
]
"""

MODELS = """\
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self):
        return self.name


class Publisher(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self):
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=50)

    def __str__(self):
        return self.name


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE, related_name="books")
    publisher = models.ForeignKey(Publisher, on_delete=models.SET_NULL, null=True, blank=True)
    tags = models.ManyToManyField(Tag, blank=True)

    def __str__(self):
        return self.title
"""

# Generated once by `makemigrations` (Django 5.2); valid for Django 4.2 to 6.x.
MIGRATION = """\
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Author",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
            ],
        ),
        migrations.CreateModel(
            name="Publisher",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
            ],
        ),
        migrations.CreateModel(
            name="Tag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=50)),
            ],
        ),
        migrations.CreateModel(
            name="Book",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=200)),
                ("author", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="books", to="shop.author")),
                ("publisher", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to="shop.publisher")),
                ("tags", models.ManyToManyField(blank=True, to="shop.tag")),
            ],
        ),
    ]
"""  # noqa: E501

VIEWS = """\
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render

from shop.models import Author, Book


def book_list(request):
    # Deliberately N+1: one query for the books, then one per book for its author.
    lines = []
    for b in Book.objects.all():
        lines.append(f"{b.title} by {b.author.name}")
    return HttpResponse("\\n".join(lines), content_type="text/plain")


def book_list_fast(request):
    books = Book.objects.select_related("author")
    lines = [f"{b.title} by {b.author.name}" for b in books]
    return HttpResponse("\\n".join(lines), content_type="text/plain")


def book_list_template(request):
    # The N+1 happens while rendering: the template reads book.author.name.
    return render(request, "shop/books.html", {"books": Book.objects.all()})


def author_detail(request, author_id):
    author = get_object_or_404(Author, pk=author_id)
    return HttpResponse(author.name, content_type="text/plain")
"""

TEMPLATE = """\
{% for book in books %}{{ book.title }} by {{ book.author.name }}
{% endfor %}
"""

APPS = """\
from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.BigAutoField"
"""

PROJECT_FILES: dict[str, str] = {
    "pytest.ini": PYTEST_INI,
    "proj/__init__.py": "",
    "proj/settings.py": SETTINGS,
    "proj/urls.py": URLS,
    "shop/__init__.py": "",
    "shop/apps.py": APPS,
    "shop/models.py": MODELS,
    "shop/migrations/__init__.py": "",
    "shop/migrations/0001_initial.py": MIGRATION,
    "shop/views.py": VIEWS,
    "shop/templates/shop/books.html": TEMPLATE,
}


class DjangoProject:
    """The project in ``pytester.path``; see the module docstring for the API."""

    def __init__(
        self,
        pytester: pytest.Pytester,
        monkeypatch: pytest.MonkeyPatch,
        backend: str = "sqlite",
        pg_server: PgServer | None = None,
        extra_settings: str = "",
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if backend == "postgres" and pg_server is None:
            raise ValueError("a postgres project needs the pg_server fixture's server")
        self.pytester = pytester
        self.path: Path = pytester.path
        self.backend = backend
        self._monkeypatch = monkeypatch
        self._pg_server = pg_server
        self.db_name: str | None = None
        self.database_url: str | None = None
        if pg_server is not None and backend == "postgres":
            self.db_name = f"dbg_{secrets.token_hex(6)}"
            self.database_url = pg_server.url_for(self.db_name)
        for relpath, source in PROJECT_FILES.items():
            self.write(relpath, source, dedent=False)
        if extra_settings:
            self.add_settings(extra_settings)

    def __repr__(self) -> str:
        return f"<DjangoProject {self.backend} at {self.path}>"

    @property
    def admin_dsn(self) -> str | None:
        """Superuser DSN on the server (``postgres`` database); None on SQLite."""
        return self._pg_server.dsn if self._pg_server and self.backend == "postgres" else None

    def write(self, relpath: str, source: str, *, dedent: bool = True) -> Path:
        target = self.path / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source) if dedent else source)
        return target

    def write_test(self, source: str, name: str = "test_shop.py") -> Path:
        return self.write(name, source)

    def add_settings(self, text: str) -> None:
        settings = self.path / "proj" / "settings.py"
        settings.write_text(settings.read_text() + "\n" + textwrap.dedent(text) + "\n")

    def env(self) -> dict[str, str | None]:
        """Environment changes for the subprocess: value to set, or None to remove."""
        changes: dict[str, str | None] = dict.fromkeys(SCRUBBED_ENV)
        if self.database_url:
            changes["DATABASE_URL"] = self.database_url
        return changes

    def run(self, *args: str, dbguard: bool = True, timeout: float = RUN_TIMEOUT_S) -> RunResult:
        if not dbguard:
            args = ("-p", "no:dbguard", *args)
        with self._monkeypatch.context() as mp:
            for name, value in self.env().items():
                if value is None:
                    mp.delenv(name, raising=False)
                else:
                    mp.setenv(name, value)
            return self.pytester.runpytest_subprocess(*args, timeout=timeout)

    def drop_databases(self) -> None:
        """Drop this project's databases on PostgreSQL (best effort; the run may have left none)."""
        if not self.db_name or self._pg_server is None:
            return
        import psycopg

        dsn = self._pg_server.dsn
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn,
        ):
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname = %s OR starts_with(datname, %s)",
                (self.db_name, f"test_{self.db_name}"),
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
