"""Per-query cost of dbguard's recorder against plain execution and CaptureQueriesContext.

Run: python benchmarks/bench_recorder.py [--queries 20000] [--repeats 9]

Prints a table of microseconds per query (medians of interleaved repeats, so machine noise hits
every variant alike) and the ratios to plain execution, then the memory that 100k recorded
queries add. The workload is the one named in the foundation issue: SQLite `SELECT 1` through
Django's cursor (a new cursor per query, fetchone), plus an ORM variant for context.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from django_memory import setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--memory-queries", type=int, default=100_000)
    args = parser.parse_args()

    setup_django()
    from django.contrib.auth.models import Group
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from pytest_dbguard.recording.django_db import DjangoTaps
    from pytest_dbguard.recording.recorder import Hub

    hub = Hub(rootdir=os.getcwd())
    taps = DjangoTaps(hub)
    connection.ensure_connection()
    taps.install()
    Group.objects.create(name="staff")
    n = args.queries

    def raw_loop() -> None:
        for _ in range(n):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()

    def orm_loop() -> None:
        for _ in range(n // 10):
            Group.objects.filter(name="staff").first()

    from django.contrib.auth.models import Permission

    def eager_loop() -> None:
        # a queryset that eager-loads, with its related objects read: what the
        # unused-eager-load probe tracks (20 rows and their content types per query)
        for _ in range(n // 20):
            for permission in Permission.objects.select_related("content_type")[:20]:
                permission.content_type.app_label  # noqa: B018

    def plain(loop):
        def run() -> float:
            start = time.perf_counter()
            loop()
            return time.perf_counter() - start
        return run

    def captured(loop):
        def run() -> float:
            start = time.perf_counter()
            with CaptureQueriesContext(connection):
                loop()
            return time.perf_counter() - start
        return run

    def recorded(loop):
        def run() -> float:
            recorder = hub.start_test("bench::test")
            start = time.perf_counter()
            recorder.start_phase("call")
            loop()
            recorder.stop_phase()
            recorder.record()
            elapsed = time.perf_counter() - start
            hub.finish_test()
            return elapsed
        return run

    def with_units(loop):
        # what --dbguard adds with nplusone on: load groups on querysets, body-call units
        from pytest_dbguard.recording import loads
        from pytest_dbguard.recording.bodysteps import BodySteps

        def run() -> float:
            uninstall = loads.install(hub)
            recorder = hub.start_test("bench::test")
            start = time.perf_counter()
            recorder.start_phase("call")
            with BodySteps(hub, loop.__code__):
                loop()
            recorder.stop_phase()
            recorder.record()
            elapsed = time.perf_counter() - start
            hub.finish_test()
            uninstall()
            return elapsed
        return run

    def with_eager(loop):
        # + the unused-eager-load probe (select_related / prefetch_related paths and reads)
        from pytest_dbguard.recording.eager import EagerProbe

        units = with_units(loop)

        def run() -> float:
            probe = EagerProbe(hub)
            uninstall = probe.install()
            hub.probes.append(probe)
            try:
                return units()
            finally:
                hub.probes.remove(probe)
                uninstall()
        return run

    for workload, loop, per_run in (("SELECT 1 via cursor", raw_loop, n),
                                    ("ORM .filter().first()", orm_loop, n // 10),
                                    ("ORM select_related, 20 rows read", eager_loop, n // 20)):
        variants = {
            "plain": plain(loop),
            "CaptureQueriesContext": captured(loop),
            "dbguard recorder": recorded(loop),
            "+ load groups, units": with_units(loop),
            "+ eager loads": with_eager(loop),
        }
        timings: dict[str, list[float]] = {name: [] for name in variants}
        for run in variants.values():  # warm-up
            run()
        for _ in range(args.repeats):
            for name, run in variants.items():
                gc.collect()
                timings[name].append(run() / per_run * 1e6)
        base = statistics.median(timings["plain"])
        print(f"\n{workload}: {per_run} queries x {args.repeats} interleaved repeats")
        print(f"{'variant':<24}{'us/query':>10}{'x plain':>10}{'x capture':>11}")
        capture = statistics.median(timings["CaptureQueriesContext"])
        for name, values in timings.items():
            med = statistics.median(values)
            print(f"{name:<24}{med:>10.3f}{med / base:>10.3f}{med / capture:>11.3f}")

    # memory: rows kept for a 100k-query test, measured with tracemalloc
    m = args.memory_queries
    gc.collect()
    tracemalloc.start()
    recorder = hub.start_test("bench::memory")
    recorder.start_phase("call")
    before = tracemalloc.get_traced_memory()[0]
    for i in range(m):
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s", [i % 7])
    recorder.stop_phase()
    record = recorder.record()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    hub.finish_test()
    kept = after - before
    print(f"\nmemory: {m} recorded queries keep {kept / 1e6:.1f} MB ({kept / m:.0f} bytes/query), "
          f"call-phase count {record.phase('call').query_count}")


if __name__ == "__main__":
    main()
