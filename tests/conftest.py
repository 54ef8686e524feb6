"""Fixtures of the project's own tests: a real PostgreSQL server and a throwaway Django project.

The API is described in ``tests/djproject.py`` (projects) and ``tests/pgserver.py`` (server).

Running: ``pytest -n 2 tests`` in a venv with ``pip install -e '.[dev]'`` (PostgreSQL comes
from ``DBGUARD_TEST_DSN`` or is started on demand), or ``tox`` for the Django/Python matrix with
coverage, or ``bash .ci/run`` for everything CI does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from tests import pgserver
from tests.djproject import BACKENDS, DjangoProject


def pytest_configure(config: pytest.Config) -> None:
    # The controller names the session; xdist workers inherit the variable, so all processes of
    # this session register as one user of the shared PostgreSQL cluster.
    if not hasattr(config, "workerinput"):
        os.environ[pgserver.SESSION_ENV] = pgserver.current_user_id()


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        user = os.environ.pop(pgserver.SESSION_ENV, None)
        if user:
            pgserver.release_shared(user)


@pytest.fixture(scope="session")
def pg_server() -> pgserver.PgServer:
    """A reachable PostgreSQL server with a superuser DSN (see tests/pgserver.py).

    Without one: the test fails under CI=true, and is skipped otherwise.
    """
    try:
        return pgserver.find_or_start()
    except pgserver.PgUnavailable as exc:
        message = (
            f"This test needs PostgreSQL and none could be found or started: {exc}\n"
            f"Set {pgserver.DSN_ENV}=postgresql://USER:PASSWORD@HOST:PORT/postgres (a role that "
            "may create databases) or install the PostgreSQL server binaries."
        )
        if pgserver.ci_mode():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pg_dsn(pg_server: pgserver.PgServer) -> str:
    return pg_server.dsn


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over the database backends of ``djproject``."""
    return str(request.param)


@pytest.fixture
def make_djproject(
    request: pytest.FixtureRequest,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., DjangoProject]]:
    projects: list[DjangoProject] = []

    def make(backend: str = "sqlite", extra_settings: str = "") -> DjangoProject:
        if projects:
            raise RuntimeError("one Django project per test: they share pytester.path")
        server = request.getfixturevalue("pg_server") if backend == "postgres" else None
        project = DjangoProject(
            pytester, monkeypatch, backend=backend, pg_server=server, extra_settings=extra_settings
        )
        projects.append(project)
        return project

    yield make
    for project in projects:
        project.drop_databases()


@pytest.fixture
def djproject(
    request: pytest.FixtureRequest, make_djproject: Callable[..., DjangoProject]
) -> DjangoProject:
    """A Django project on SQLite, or on ``backend`` when the test requests that fixture."""
    backend = request.getfixturevalue("backend") if "backend" in request.fixturenames else "sqlite"
    return make_djproject(backend=backend)


@pytest.fixture
def djproject_pg(make_djproject: Callable[..., DjangoProject]) -> DjangoProject:
    """A Django project on PostgreSQL, with a database of its own."""
    return make_djproject(backend="postgres")
