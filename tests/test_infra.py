"""Self-tests of the test infrastructure: the PostgreSQL server and the Django project helper."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests import pgserver
from tests.djproject import DjangoProject

# These tests check the infrastructure, not the plugin, so the project runs without it.
NO_PLUGIN = {"dbguard": False}

CREATE_AUTHOR_TEST = """
    import pytest

    from shop.models import Author


    @pytest.mark.django_db
    def test_create_author():
        Author.objects.create(name="Ursula")
        assert Author.objects.count() == 1
"""


def test_pg_server_connects(pg_server: pgserver.PgServer) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        version = conn.execute("SELECT version()").fetchone()
        is_super = conn.execute(
            "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert version is not None and version[0].startswith("PostgreSQL")
    assert is_super == (True,), "tests must be able to create databases"


def test_shared_cluster_lifecycle() -> None:
    """Start, share, release and stop a throwaway cluster, even when DBGUARD_TEST_DSN is set."""
    directory = Path(tempfile.mkdtemp(prefix="dbguard-lifecycle-"))
    other_session = subprocess.Popen(["sleep", "60"])
    other_user = f"{other_session.pid}:{pgserver._proc_start_time(other_session.pid)}"
    me = pgserver.current_user_id()
    try:
        problem = ""
        try:
            dsn = pgserver.acquire_shared(me, directory)
        except pgserver.PgUnavailable as exc:
            problem = f"could not start a throwaway PostgreSQL: {exc}"
        if problem:
            if pgserver.ci_mode():
                pytest.fail(problem, pytrace=False)
            pytest.skip(problem)
        with psycopg.connect(dsn, autocommit=True) as conn:
            settings = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("fsync", "max_connections", "deadlock_timeout", "listen_addresses")
            }
        assert settings == {
            "fsync": "off",
            "max_connections": "200",
            "deadlock_timeout": "200ms",
            "listen_addresses": "127.0.0.1",
        }
        assert pgserver.acquire_shared(other_user, directory) == dsn  # shared, not restarted
        assert pgserver.release_shared(me, directory) is False  # the other session is alive
        assert pgserver.check_reachable(dsn) is None
        other_session.kill()
        other_session.wait()
        # A session that died without releasing does not keep the server alive.
        assert pgserver.release_shared(me, directory) is True
        assert pgserver.check_reachable(dsn, timeout_s=2) is not None
        assert not (directory / "state.json").exists()
    finally:
        other_session.kill()
        other_session.wait()
        state = pgserver._read_state(directory / "state.json")
        if state:
            pgserver.Cluster(Path(state["cluster_dir"])).stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_dsn_with_dbname_keeps_credentials() -> None:
    url = pgserver.dsn_with_dbname("host=db.example port=6543 user=u password=p@ss dbname=x", "y")
    assert url == "postgresql://u:p%40ss@db.example:6543/y"
    url = pgserver.dsn_with_dbname("postgresql://u:pw@127.0.0.1:5432/postgres?sslmode=disable", "z")
    assert url == "postgresql://u:pw@127.0.0.1:5432/z?sslmode=disable"


def test_djproject_sqlite_runs_a_db_test(djproject: DjangoProject) -> None:
    assert djproject.backend == "sqlite"
    djproject.write_test(CREATE_AUTHOR_TEST)
    result = djproject.run("-v", **NO_PLUGIN)
    result.assert_outcomes(passed=1)
    assert "sqlite" in (djproject.path / "proj" / "settings.py").read_text()


def test_djproject_postgres_runs_a_db_test(djproject_pg: DjangoProject) -> None:
    djproject_pg.write_test(
        CREATE_AUTHOR_TEST
        + """
    @pytest.mark.django_db
    def test_on_postgres():
        from django.db import connection
        assert connection.vendor == "postgresql"
        assert connection.settings_dict["NAME"].startswith("test_dbg_")
    """
    )
    result = djproject_pg.run("-v", **NO_PLUGIN)
    result.assert_outcomes(passed=2)


def test_postgres_databases_are_dropped(make_djproject, pg_server: pgserver.PgServer) -> None:
    project = make_djproject(backend="postgres")
    project.write_test(CREATE_AUTHOR_TEST)
    project.run("--reuse-db", **NO_PLUGIN).assert_outcomes(passed=1)
    assert project.db_name is not None

    def leftovers() -> list[str]:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (f"%{project.db_name}%",),
            ).fetchall()
        return [name for (name,) in rows]

    assert leftovers() == [f"test_{project.db_name}"]  # --reuse-db keeps it
    project.drop_databases()
    assert leftovers() == []


def test_backend_param_switches_the_project(djproject: DjangoProject, backend: str) -> None:
    assert djproject.backend == backend
    assert (djproject.database_url is None) == (backend == "sqlite")
    djproject.write_test(
        """
        import pytest
        from django.db import connection

        @pytest.mark.django_db
        def test_vendor():
            assert connection.vendor == {vendor!r}
        """.replace("{vendor!r}", repr("sqlite" if backend == "sqlite" else "postgresql"))
    )
    djproject.run(**NO_PLUGIN).assert_outcomes(passed=1)


def test_views_and_extra_settings(djproject: DjangoProject) -> None:
    djproject.add_settings("DBGUARD_MARKER_SETTING = 42")
    djproject.write_test(
        """
        import pytest
        from django.conf import settings
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from shop.models import Author, Book


        @pytest.fixture
        def books():
            for i in range(3):
                Book.objects.create(title=f"t{i}", author=Author.objects.create(name=f"a{i}"))


        def test_extra_setting():
            assert settings.DBGUARD_MARKER_SETTING == 42


        @pytest.mark.django_db
        @pytest.mark.parametrize(
            "url, queries", [("/books/", 4), ("/books-fast/", 1), ("/books-template/", 4)]
        )
        def test_views(client, books, url, queries):
            with CaptureQueriesContext(connection) as ctx:
                response = client.get(url)
            assert response.status_code == 200
            assert b"t2 by a2" in response.content
            assert len(ctx.captured_queries) == queries


        @pytest.mark.django_db
        def test_author_detail(client):
            author = Author.objects.create(name="Le Guin")
            assert client.get(f"/authors/{author.pk}/").content == b"Le Guin"
            assert client.get("/authors/999999/").status_code == 404
        """
    )
    djproject.run(**NO_PLUGIN).assert_outcomes(passed=5)


def test_run_scrubs_the_outer_environment(
    djproject: DjangoProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "nowhere.settings")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw9")
    monkeypatch.setenv("CI", "marker-value")
    djproject.write_test(
        """
        import os

        def test_env():
            assert os.environ["DJANGO_SETTINGS_MODULE"] == "proj.settings"
            assert "DATABASE_URL" not in os.environ
            assert "PYTEST_XDIST_WORKER" not in os.environ
            assert os.environ["CI"] == "marker-value"
        """
    )
    djproject.run(**NO_PLUGIN).assert_outcomes(passed=1)
    # run() restores the outer environment afterwards.
    assert os.environ["DATABASE_URL"] == "postgresql://nobody@127.0.0.1:1/none"


def test_run_under_xdist_in_the_project(djproject_pg: DjangoProject) -> None:
    djproject_pg.write_test(
        CREATE_AUTHOR_TEST
        + """
    @pytest.mark.django_db
    def test_second():
        from shop.models import Tag
        Tag.objects.create(name="sf")
    """
    )
    djproject_pg.run("-n", "2", **NO_PLUGIN).assert_outcomes(passed=2)
