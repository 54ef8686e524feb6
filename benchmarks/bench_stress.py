"""Time stress mode takes to detect a planted deadlock and to stop a planted hang, on PostgreSQL.

Run: python benchmarks/bench_stress.py [--runs 20] [--hang-timeout 0.5]

Needs a PostgreSQL server: DBGUARD_TEST_DSN, or the throwaway cluster tests/pgserver.py starts.
Everything runs in ONE pytest subprocess against a small Django project (the machine is shared):

- deadlock: two threads update two rows in opposite order, 50 ms apart, for `--runs` rounds.
  Per round: when PostgreSQL aborted the victim (ms after the round started; the floor is the
  50 ms of planted work + deadlock_timeout) and when the watchdog first saw the cycle.
- hang, cancel path: a Python lock held by one thread while it waits on a row lock held by the
  other, `--runs` times. Per run: how long after the round's timeout the round had ended (the
  watchdog cancelled the waiting statement, the Python lock was released).
- hang, abandon path: threads waiting on an Event nothing sets (no statement to cancel), fewer
  runs (each costs timeout + the full grace periods). Per run: time after the timeout.

Prints min / median / max of each, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TESTS = '''
import threading
import time

import pytest
from django.db import transaction
from django.db.models import F

from inventory.models import Product

LOCK = threading.Lock()
NEVER = threading.Event()
RUNS = {runs}
ABANDON_RUNS = {abandon_runs}


@pytest.fixture
def skus(transactional_db):
    return [Product.objects.create(sku=sku, stock=100).pk for sku in ("A", "B")]


@pytest.mark.stress(threads=2, rounds=RUNS, timeout=5)
def test_deadlock(skus, dbguard):
    first, second = skus if dbguard.stress_index == 0 else skus[::-1]
    with transaction.atomic():
        Product.objects.filter(pk=first).update(stock=F("stock") - 1)
        time.sleep(0.05)
        Product.objects.filter(pk=second).update(stock=F("stock") - 1)


@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.stress(threads=2, rounds=1, timeout={hang_timeout})
def test_hang_cancelled(skus, dbguard, run):
    if dbguard.stress_index == 0:
        with transaction.atomic():
            Product.objects.select_for_update().get(pk=skus[0])
            time.sleep(0.1)
            with LOCK:
                pass
    else:
        with LOCK:
            time.sleep(0.05)
            Product.objects.filter(pk=skus[0]).update(stock=0)


@pytest.mark.parametrize("run", range(ABANDON_RUNS))
@pytest.mark.stress(threads=2, rounds=1, timeout={hang_timeout})
def test_hang_abandoned(transactional_db, run):
    NEVER.wait()
'''


def write_project(directory: Path, runs: int, abandon_runs: int, hang_timeout: float) -> None:
    from tests.djproject import PROJECT_FILES
    from tests.stress_project import APPS, MIGRATION, MODELS

    files = dict(PROJECT_FILES)
    files.update({
        "inventory/__init__.py": "",
        "inventory/apps.py": APPS,
        "inventory/models.py": MODELS,
        "inventory/migrations/__init__.py": "",
        "inventory/migrations/0001_initial.py": MIGRATION,
        "test_bench.py": textwrap.dedent(TESTS.format(
            runs=runs, abandon_runs=abandon_runs, hang_timeout=hang_timeout)),
    })
    files["proj/settings.py"] += '\nINSTALLED_APPS = [*INSTALLED_APPS, "inventory"]\n'
    for relpath, text in files.items():
        target = directory / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def stats(values: list[float]) -> str:
    if not values:
        return "no data"
    return (f"min {min(values):7.1f}   median {statistics.median(values):7.1f}   "
            f"max {max(values):7.1f}   (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--abandon-runs", type=int, default=5)
    parser.add_argument("--hang-timeout", type=float, default=0.5)
    args = parser.parse_args()

    from tests import pgserver

    user = f"bench-stress-{os.getpid()}"
    server = pgserver.find_or_start(user=user)
    db_name = f"dbg_bench_{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory(prefix="dbguard-bench-stress-") as tmp:
            directory = Path(tmp)
            write_project(directory, args.runs, args.abandon_runs, args.hang_timeout)
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("PYTEST_", "DJANGO_"))}
            env["DATABASE_URL"] = server.url_for(db_name)
            completed = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--dbguard",
                 "--dbguard-stress", "--dbguard-json", "report.json", "test_bench.py"],
                cwd=directory, env=env, capture_output=True, text=True, timeout=600)
            report_path = directory / "report.json"
            if not report_path.exists():
                print(completed.stdout[-4000:], completed.stderr[-4000:])
                return 1
            tests = json.loads(report_path.read_text())["tests"]
    finally:
        _drop(server.dsn, db_name)
        if server.source == "started":
            pgserver.release_shared(user)

    by_name = {t["nodeid"].split("::")[-1]: t["stress"] for t in tests}
    deadlock = by_name["test_deadlock"]
    aborted = [d["at_ms"] for d in deadlock["deadlocks"]]
    seen = [d["seen_after_ms"] for d in deadlock["deadlocks"] if d["seen_after_ms"] is not None]
    rounds_with = len({d["round"] for d in deadlock["deadlocks"]})
    # a busy machine can let one thread take both locks before the other starts: no hang
    planted = [s for name, s in by_name.items() if name.startswith("test_hang_cancelled")]
    cancelled = [s["hang"]["ended_after_ms"] - s["hang"]["timeout_s"] * 1000
                 for s in planted if s["hang"]]
    abandoned = [s["hang"]["ended_after_ms"] - s["hang"]["timeout_s"] * 1000
                 for name, s in by_name.items() if name.startswith("test_hang_abandoned")]
    print(f"planted deadlock: found in {rounds_with} of {deadlock['rounds_run']} rounds "
          "(server deadlock_timeout applies; 50 ms of planted work before the cycle forms)")
    print(f"  PostgreSQL aborted the victim, ms after round start:  {stats(aborted)}")
    print(f"  watchdog first saw the cycle, ms after round start:   {stats(seen)}")
    print(f"planted hang (Python lock + row lock), timeout {args.hang_timeout:g} s: hung in "
          f"{len(cancelled)} of {len(planted)} runs")
    print(f"  round ended, ms after the timeout (cancel path):      {stats(cancelled)}")
    print("planted hang (Event nothing sets), threads abandoned:")
    print(f"  round ended, ms after the timeout (terminate path):   {stats(abandoned)}")
    print(f"  promise: every hang ends within timeout + 2000 ms -> worst "
          f"{max(cancelled + abandoned, default=0):.1f} ms after the timeout")
    return 0


def _drop(dsn: str, db_name: str) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            for name in (db_name, f"test_{db_name}"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
