"""Cost of the query-shape rules: per query (tap work) and per test (rule evaluation).

Run: python benchmarks/bench_rules.py [--queries 10000] [--repeats 7]

Variants, interleaved so machine noise hits each alike (medians printed):
  plain                   no recording
  recorder                taps only, as with no rule needing per-query data
  recorder + rules        what `--dbguard` does: SQL+parameter digests for `duplicate`, then
                          every default rule evaluated on the test's record
Workloads: a 10k-query test of `SELECT 1` through Django's cursor, and an ORM N+1
(`book.author` for each book) where every query takes the lazy-relation path.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from django_memory import setup_django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    setup_django()
    from django.contrib.auth.models import Permission
    from django.db import connection, connections

    from pytest_dbguard.recording.django_db import DjangoTaps
    from pytest_dbguard.recording.recorder import Hub
    from pytest_dbguard.rules import RULES, TestContext, evaluate

    n = args.queries
    connection.ensure_connection()
    actions = {rule_id: spec.default_action for rule_id, spec in RULES.items()}
    context = TestContext(nodeid="bench::test", options={"nplusone_threshold": 3,
                                                         "slow_ms": 100.0})

    def make_hub(param_keys: bool) -> Hub:
        hub = Hub(rootdir=os.getcwd())
        hub.collect_param_keys = param_keys
        return hub

    def raw_loop() -> None:
        for _ in range(n):
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()

    def lazy_loop() -> None:
        # Permission.content_type is a forward FK: one lazy query per permission, fresh
        # instances each run so every access queries
        for permission in Permission.objects.all()[: n // 20]:
            permission.content_type.app_label  # noqa: B018

    def timed(loop, hub: Hub | None, with_rules: bool):
        def run() -> float:
            if hub is None:
                start = time.perf_counter()
                loop()
                return time.perf_counter() - start
            recorder = hub.start_test("bench::test")
            start = time.perf_counter()
            recorder.start_phase("call")
            loop()
            recorder.stop_phase()
            record = recorder.record()
            if with_rules:
                evaluate(record, context, actions, {}, stage="call")
            elapsed = time.perf_counter() - start
            hub.finish_test()
            return elapsed
        return run

    for workload, loop in (("SELECT 1 via cursor", raw_loop), ("lazy FK N+1 (ORM)", lazy_loop)):
        bare = make_hub(False)
        full = make_hub(True)
        variants = {
            "plain": (None, False),
            "recorder": (bare, False),
            "recorder + rules": (full, True),
        }
        timings: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats + 1):  # the first round warms caches and is dropped
            for name, (hub, rules) in variants.items():
                if hub is not None:
                    connection.execute_wrappers[:] = [
                        w for w in connection.execute_wrappers if not hasattr(w, "dbguard_hub")]
                    DjangoTaps(hub).tap(connections["default"])  # the wrapper, not its proxy
                else:
                    connection.execute_wrappers[:] = [
                        w for w in connection.execute_wrappers if not hasattr(w, "dbguard_hub")]
                gc.collect()
                timings[name].append(timed(loop, hub, rules)())
        base = statistics.median(timings["plain"][1:])
        queries = n if loop is raw_loop else 1 + min(n // 20, Permission.objects.count())
        print(f"\n{workload}: {queries} queries per test x {args.repeats} interleaved repeats")
        print(f"{'variant':<20}{'ms/test':>10}{'us/query':>10}{'x plain':>10}")
        for name, values in timings.items():
            med = statistics.median(values[1:])
            print(f"{name:<20}{med * 1e3:>10.1f}{med / queries * 1e6:>10.2f}{med / base:>10.3f}")


if __name__ == "__main__":
    main()
