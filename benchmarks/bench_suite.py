"""Whole-suite overhead of --dbguard on a fast REST-API-shaped suite, per backend and per phase.

Run: python benchmarks/bench_suite.py [--tests 1600] [--pairs 3] [--backends sqlite,postgresql]
     python benchmarks/bench_suite.py --quick          # 600 tests, 3 pairs, 2,000-test memory run

Generates a small Django project in a temporary directory (JSON views, an Author/Book model) and
a suite of short tests in the shape of an API project: test-client requests to JSON views,
serializer-like ORM reads of 1-10 rows, `db` tests, a minority of `transactional_db` tests and a
few async ones. Each backend runs three variants as pytest subprocesses, interleaved pair by
pair so machine noise hits them alike: plain (the plugin installed, not asked for), `--dbguard`,
and `--dbguard` with the JSON, Markdown and HTML reports. Prints the median wall ratio to plain.
`--floor` adds floor_plugin.py, a lower bound: what the default rules must observe, in the
least Python, with none of dbguard's code.

Then one profiled `--dbguard` run (bench_profile.py, loaded with -p, wraps dbguard's internal
steps in perf_counter spans; nothing of it is in the timed runs) splits dbguard's per-test cost
by step, and one run of --memory-tests tests measures what dbguard's own records
keep at the end of the session (what is reachable from its session and per-test state).

PostgreSQL: DBGUARD_TEST_DSN (a role that may create databases), else tests/pgserver.py finds or
starts a throwaway server. The DSN is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

SETTINGS = '''
import os
SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "benchsite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "api"]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
if os.environ.get("DATABASE_URL"):
    import dj_database_url
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
'''

MODELS = '''
from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)


class Book(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, related_name="books", on_delete=models.CASCADE)
    price_cents = models.IntegerField(default=0)
'''

VIEWS = '''
import json

from django.http import JsonResponse
from django.shortcuts import get_object_or_404

from .models import Author, Book


def serialize_book(book):
    return {"id": book.id, "title": book.title, "author": book.author.name,
            "price": book.price_cents}


def book_list(request):
    books = Book.objects.select_related("author").order_by("id")[:10]
    return JsonResponse({"results": [serialize_book(b) for b in books]})


def book_detail(request, pk):
    return JsonResponse(serialize_book(get_object_or_404(
        Book.objects.select_related("author"), pk=pk)))


def author_create(request):
    author = Author.objects.create(name=json.loads(request.body)["name"])
    return JsonResponse({"id": author.id, "name": author.name}, status=201)


def health(request):
    return JsonResponse({"ok": True})
'''

URLS = '''
from django.urls import path

from api import views

urlpatterns = [
    path("books/", views.book_list),
    path("books/<int:pk>/", views.book_detail),
    path("authors/", views.author_create),
    path("health/", views.health),
]
'''

PYTEST_INI = '''
[pytest]
DJANGO_SETTINGS_MODULE = benchsite.settings
pythonpath = .
testpaths = tests
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
'''

CONFTEST = '''
import pytest

from api.models import Author, Book


@pytest.fixture
def make_books(db):
    def make(n):
        author = Author.objects.create(name="author")
        return Book.objects.bulk_create(
            [Book(title=f"title {i}", author=author, price_cents=i) for i in range(n)])
    return make
'''

# (module, share of the suite, body); {n} is the parametrize count
KINDS = [
    ("test_api_list", 0.24, '''
@pytest.mark.parametrize("n", range({n}))
def test_list(client, make_books, n):
    make_books(n % 10 + 1)
    response = client.get("/books/")
    assert response.status_code == 200
    assert len(response.json()["results"]) == n % 10 + 1
'''),
    ("test_api_detail", 0.15, '''
@pytest.mark.parametrize("n", range({n}))
def test_detail(client, make_books, n):
    book = make_books(1)[0]
    response = client.get(f"/books/{{book.pk}}/")
    assert response.json()["title"] == "title 0"
'''),
    ("test_api_create", 0.10, '''
@pytest.mark.parametrize("n", range({n}))
def test_create(client, db, n):
    response = client.post("/authors/", {{"name": f"a{{n}}"}}, content_type="application/json")
    assert response.status_code == 201
'''),
    ("test_api_health", 0.05, '''
@pytest.mark.parametrize("n", range({n}))
def test_health(client, n):
    assert client.get("/health/").json() == {{"ok": True}}
'''),
    ("test_serializers", 0.30, '''
from api.views import serialize_book


@pytest.mark.parametrize("n", range({n}))
def test_serialize(make_books, n):
    make_books(n % 10 + 1)
    data = [serialize_book(b) for b in Book.objects.select_related("author")[:10]]
    assert len(data) == n % 10 + 1
'''),
    ("test_models", 0.08, '''
@pytest.mark.parametrize("n", range({n}))
def test_rename(db, n):
    author = Author.objects.create(name="before")
    Author.objects.filter(pk=author.pk).update(name="after")
    author.refresh_from_db()
    assert author.name == "after"
'''),
    ("test_transactional", 0.06, '''
@pytest.mark.parametrize("n", range({n}))
def test_committed(transactional_db, n):
    Author.objects.create(name=f"committed {{n}}")
    assert Author.objects.count() == 1
'''),
    ("test_async", 0.02, '''
from api.views import serialize_book


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range({n}))
async def test_async_serialize(n):
    data = serialize_book(Book(id=n, title="t", author=Author(name="a"), price_cents=n))
    assert data["id"] == n
'''),
]


def write_project(directory: Path, tests: int) -> None:
    (directory / "benchsite").mkdir(parents=True)
    (directory / "benchsite" / "__init__.py").write_text("")
    (directory / "benchsite" / "settings.py").write_text(SETTINGS)
    (directory / "benchsite" / "urls.py").write_text(URLS)
    (directory / "api").mkdir()
    (directory / "api" / "__init__.py").write_text("")
    (directory / "api" / "models.py").write_text(MODELS)
    (directory / "api" / "views.py").write_text(VIEWS)
    (directory / "tests").mkdir()
    (directory / "tests" / "__init__.py").write_text("")
    (directory / "tests" / "conftest.py").write_text(CONFTEST)
    (directory / "pytest.ini").write_text(PYTEST_INI)
    shutil.copy(HERE / "bench_profile.py", directory / "bench_profile.py")
    shutil.copy(HERE / "floor_plugin.py", directory / "floor_plugin.py")
    header = "import pytest\n\nfrom api.models import Author, Book\n"
    for module, share, body in KINDS:
        count = max(1, round(tests * share))
        (directory / "tests" / f"{module}.py").write_text(header + body.format(n=count))


def scrub(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


FLOOR = "floor (floor_plugin.py)"
CPU: dict[str, float] = {}  # run() notes the pytest process's CPU seconds here, by argv


def run(project: Path, env: dict[str, str], extra: list[str], secret: str | None) -> float:
    """Wall seconds of one pytest run; its CPU seconds (user + system) go to CPU["last"]."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra],
        cwd=project, env=env, capture_output=True, text=True,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"benchmark run failed ({extra}):\n"
                         + scrub(done.stdout[-4000:] + done.stderr[-2000:], secret))
    return elapsed


def postgres_url(dbname: str) -> tuple[str, str | None]:
    """A database URL for `dbname` on the test server, and its password (to keep it unprinted)."""
    from psycopg.conninfo import conninfo_to_dict

    from tests import pgserver

    server = pgserver.find_or_start()
    return server.url_for(dbname), conninfo_to_dict(server.dsn).get("password")


def drop_database(url: str, dbname: str) -> None:
    import psycopg

    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def bench_backend(backend: str, project: Path, env: dict[str, str], args: argparse.Namespace,
                  secret: str | None) -> dict[str, object]:
    reports = project / "reports"
    reports.mkdir(exist_ok=True)
    variants = {
        "plain": [],
        "--dbguard": ["--dbguard"],
        "--dbguard + json/md/html": [
            "--dbguard", f"--dbguard-json={reports / 'r.json'}",
            f"--dbguard-md={reports / 'r.md'}", f"--dbguard-html={reports / 'r.html'}"],
    }
    if args.no_reports:
        del variants["--dbguard + json/md/html"]
    if args.floor:
        variants[FLOOR] = ["-p", "floor_plugin"]
    envs = {name: env for name in variants}
    if args.compare_to:
        # the same runs with another checkout's plugin first on the path (before/after a cut)
        other = path_first(env, str(Path(args.compare_to).resolve()))
        for name in list(variants):
            if name not in ("plain", FLOOR):  # the floor runs none of either checkout's code
                variants[f"{name} @ {args.compare_to}"] = variants[name]
                envs[f"{name} @ {args.compare_to}"] = other
    if args.wheel_site:
        # an installed wheel's first run: PYTHONDONTWRITEBYTECODE keeps pytest from caching
        # its rewrite of the plugin, so every timed run is a first one
        variants["--dbguard, wheel, first run"] = ["--dbguard"]
        envs["--dbguard, wheel, first run"] = dict(path_first(env, args.wheel_site),
                                                   PYTHONDONTWRITEBYTECODE="1")
    common = ["--reuse-db"] if backend == "postgresql" else []
    run(project, env, common + ["--dbguard"], secret)  # warm up: bytecode, test database
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    loads = [load()]
    for _ in range(args.pairs):
        for name, extra in variants.items():
            times[name].append(run(project, envs[name], common + extra, secret))
            cpu[name].append(CPU["last"])
        loads.append(load())
    base = statistics.median(times["plain"])
    print(f"\n{backend}: {args.tests} tests, median of {args.pairs} interleaved runs "
          f"({loads[0]} before, {loads[-1]} after)")
    ratios: dict[str, float] = {}
    cpu_ratios: dict[str, float] = {}
    print(f"  {'variant':<40} {'wall':>7}   {'wall ratio':>10}   {'CPU ratio':>9}   "
          f"(wall ratio of each pair)")
    for name, samples in times.items():
        # the ratio of each interleaved pair, then their median: drifting load cancels out
        pair_ratios = [t / p for t, p in zip(samples, times["plain"], strict=True)]
        ratios[name] = statistics.median(pair_ratios)
        # CPU seconds of the pytest process: what a busy shared machine distorts least
        cpu_ratios[name] = statistics.median(
            c / p for c, p in zip(cpu[name], cpu["plain"], strict=True))
        print(f"  {name:<40} {statistics.median(samples):6.2f}s   {ratios[name]:10.3f}   "
              f"{cpu_ratios[name]:9.3f}   ({', '.join(f'{r:.3f}' for r in pair_ratios)})")
    print(f"  plain: {base / args.tests * 1000:.2f} ms per test in all")

    if not args.profile:
        return {"ratios": ratios, "cpu": cpu_ratios, "load": loads}
    profile_path = project / "profile.json"
    profile_env = dict(env, DBGUARD_PROFILE=str(profile_path))
    run(project, profile_env, common + variants.get("--dbguard + json/md/html", ["--dbguard"])
        + ["-p", "bench_profile"], secret)
    spans = json.loads(profile_path.read_text())
    tests = spans.pop("tests", args.tests) or 1
    print(f"  dbguard's work per test, ms (one profiled run of {tests} tests):")
    total = 0.0
    for step, seconds in spans.items():
        total += seconds
        print(f"    {step:<20} {seconds / tests * 1000:7.3f}")
    print(f"    {'sum':<20} {total / tests * 1000:7.3f}   (the per-query tap comes on top)")
    return {"ratios": ratios, "cpu": cpu_ratios, "load": loads}


def bench_memory(tests: int, env: dict[str, str]) -> None:
    directory = Path(tempfile.mkdtemp(prefix="dbguard-bench-mem-"))
    try:
        write_project(directory, tests)
        out = directory / "memory.json"
        memory_env = dict(env, DBGUARD_MEMORY=str(out))
        memory_env.pop("DATABASE_URL", None)
        run(directory, memory_env, ["--dbguard", "-p", "bench_profile"], None)
        data = json.loads(out.read_text())
        mb = data["bytes"] / 1e6
        print(f"\nmemory: {data['tests']} tests (SQLite) keep {mb:.1f} MB in "
              f"dbguard's records at the end of the session ({data['bytes'] / data['tests']:.0f} "
              f"bytes per test; target < 50 MB at 10,000 tests)")
        for line in data["top"]:
            print(f"    {line}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def path_first(env: dict[str, str], directory: str) -> dict[str, str]:
    """`env` with `directory` first on PYTHONPATH: its copy of the plugin is the one imported."""
    return dict(env, PYTHONPATH=os.pathsep.join(
        p for p in (directory, env.get("PYTHONPATH")) if p))


def install_wheel() -> str:
    """Build this checkout's wheel and install it, without dependencies, into a directory of
    its own (removed at exit); runs that put it first on PYTHONPATH import it from there."""
    import atexit

    where = Path(tempfile.mkdtemp(prefix="dbguard-bench-wheel-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    for step in (["wheel", "--no-deps", "-q", "-w", str(where / "dist"), str(ROOT)],
                 ["install", "--no-deps", "-q", "--target", str(where / "site")]):
        if step[0] == "install":
            step.extend(str(w) for w in (where / "dist").glob("*.whl"))
        done = subprocess.run([sys.executable, "-m", "pip", *step], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"--wheel: pip {step[0]} failed:\n{done.stderr[-3000:]}")
    print("wheel: built and installed for the wheel variant")
    return str(where / "site")


def compile_plugin() -> str:
    """Write the plugin's bytecode before timing, as an installed copy has it.

    An editable install imports the plugin from this checkout, and where
    PYTHONDONTWRITEBYTECODE is set (or the checkout is read-only) Python compiles every module
    from source in every run: that would charge a --dbguard run for compiling the modules only
    it imports. A wheel install is loaded differently: pytest rewrites the asserts of every
    module of a plugin installed with an entry point, and caches that bytecode itself, so the
    first run in a fresh environment (or every run where Python may not write bytecode) pays
    for parsing and compiling them (README, "Performance").
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("pytest_dbguard")
    if spec is None or not spec.submodule_search_locations:
        return "bytecode: pytest_dbguard not found"
    where = list(spec.submodule_search_locations)[0]
    ok = compileall.compile_dir(where, quiet=1)
    note = " (PYTHONDONTWRITEBYTECODE is set: runs read it, never write it)" if os.environ.get(
        "PYTHONDONTWRITEBYTECODE") else ""
    return f"bytecode: pytest_dbguard compiled {'' if ok else 'with errors '}in place{note}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests", type=int, default=1600)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--memory-tests", type=int, default=10_000,
                        help="tests in the memory run (0: skip it)")
    parser.add_argument("--no-reports", action="store_true",
                        help="skip the json/md/html variant")
    parser.add_argument("--compare-to", metavar="DIR",
                        help="also time the --dbguard variants with the plugin of another "
                             "checkout (e.g. `git worktree add /tmp/before main`). Caveat: "
                             "that checkout goes first on PYTHONPATH, where pytest finds it as "
                             "a plugin's package and rewrites its asserts, compiling every "
                             "module it imports (in every run where Python may not write "
                             "bytecode): the other checkout reads slower than it is; compare "
                             "two runs of the same kind instead")
    parser.add_argument("--wheel", action="store_true",
                        help="also time --dbguard with this checkout built and installed as a "
                             "wheel, in its first run: pytest rewrites the asserts of an "
                             "installed plugin's modules and caches them itself, so a fresh "
                             "environment (a CI job that installs dbguard) pays for parsing "
                             "and compiling them once")
    parser.add_argument("--floor", action="store_true",
                        help="also time floor_plugin.py: what the default rules must observe, "
                             "in the least Python and none of dbguard's code (a lower bound "
                             "for any plugin doing this job; see the module's docstring)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="the profiled run that splits dbguard's cost by step")
    parser.add_argument("--quick", action="store_true",
                        help="600 tests, 3 pairs, a 2,000-test memory run")
    args = parser.parse_args()
    if args.quick:
        args.tests, args.pairs = 600, 3
        args.memory_tests = min(args.memory_tests, 2000)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
          f"{load()}, python {sys.version.split()[0]}")
    print(compile_plugin())
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "DBGUARD_", "COV_")) and k != "DATABASE_URL"}
    results = {}
    args.wheel_site = install_wheel() if args.wheel else None
    for backend in args.backends.split(","):
        project = Path(tempfile.mkdtemp(prefix=f"dbguard-bench-{backend}-"))
        secret = None
        dbname = f"dbguard_bench_{os.getpid()}"
        url = None
        try:
            write_project(project, args.tests)
            backend_env = dict(env)
            if backend == "postgresql":
                url, secret = postgres_url(dbname)
                backend_env["DATABASE_URL"] = url
            results[backend] = bench_backend(backend, project, backend_env, args, secret)
        finally:
            shutil.rmtree(project, ignore_errors=True)
            if url is not None:
                drop_database(url, "test_" + dbname)
    if args.memory_tests:
        bench_memory(args.memory_tests, env)
    print("\nsummary (median of per-pair ratios to plain, wall / CPU):")
    for backend, result in results.items():
        ratios, cpu = result["ratios"], result["cpu"]
        assert isinstance(ratios, dict) and isinstance(cpu, dict)
        for name, ratio in ratios.items():
            if name != "plain":
                print(f"  {backend:<11} {name:<40} {ratio:.3f} / {cpu[name]:.3f}")


if __name__ == "__main__":
    main()
