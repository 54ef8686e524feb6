"""One pytest run as dbguard sees it: which tests to record, their records, findings and reports.

plugin.py stays a table of contents of hooks; the work those hooks delegate lives here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import markers
from .config import Settings
from .events import Finding, Query, TestRecord
from .recording.recorder import Hub, TestRecorder, build_phase
from .reporting import json_report, terminal
from .reporting.entries import test_entry
from .rules import RULES, TestContext, evaluate
from .rules.budget import Budget, describe_excess
from .rules.shape import QueryTimeout
from .stress import DEFAULT_ROUNDS, DEFAULT_THREADS, DEFAULT_TIMEOUT_S, StressPlan, StressSpec

DJANGO_NOT_CONFIGURED = (
    "dbguard needs Django: configure pytest-django (DJANGO_SETTINGS_MODULE in pytest.ini or "
    "the environment) before using dbguard markers or the dbguard fixture."
)

OUR_MARKERS = ("query_budget", "query_timeout", "stress")
STRESS_RULES = ("deadlock", "lock-wait", "stress-hang")
# A stressed body runs threads x rounds times in one phase: every query repeats by design and
# lock waits make queries slow. These rules judge the test's normal (unstressed) run instead.
STRESS_SUSPENDED_RULES = ("budget", "nplusone", "nplusone-loop", "duplicate", "slow-query")
# pytest-django fixtures that give a test real commits, visible to other connections.
TRANSACTIONAL_FIXTURES = frozenset({"transactional_db", "live_server", "django_db_reset_sequences",
                                    "django_db_serialized_rollback"})
STRESS_NEEDS_COMMITS = (
    "@pytest.mark.stress needs real commits, but this test runs inside pytest-django's wrapping "
    "transaction (the `db` fixture or @pytest.mark.django_db), which the other threads cannot "
    "see. Use @pytest.mark.django_db(transaction=True) or the `transactional_db` fixture."
)


def django_ready() -> bool:
    """True once pytest-django (or the user) configured settings; never imports Django itself."""
    if "django" not in sys.modules:
        return False
    try:
        from django.apps import apps
        from django.conf import settings

        return bool(settings.configured and apps.ready)
    except Exception:
        return False


@dataclass
class TestState:
    """dbguard's per-test state, kept in item.stash."""

    __test__ = False

    recorder: TestRecorder | None
    context: TestContext
    actions: dict[str, str]
    allowed: dict[str, str]
    timeout: QueryTimeout | None = None
    started: float = field(default_factory=time.perf_counter)
    findings: list[Finding] = field(default_factory=list)
    record: TestRecord | None = None
    stress: StressPlan | None = None


class DbguardSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.hub: Hub | None = None
        self._taps: Any = None
        self._timeouts: Any = None
        self.entries: dict[str, dict[str, Any]] = {}
        self.outcomes: dict[str, str] = {}
        self.internal_errors: list[str] = []
        self.notes: list[str] = []
        self.shared_fixture_queries = 0
        self._django_missing_noted = False
        self._stress_vendor_noted = False
        self._closers: list[Any] = []

    # -- deciding what to record ----------------------------------------------------------
    def wants_recording(self, item: pytest.Item) -> bool:
        if self.settings.enabled:
            return True
        if any(item.get_closest_marker(name) for name in OUR_MARKERS):
            return True
        return "dbguard" in getattr(item, "fixturenames", ())

    def ensure_hub(self) -> Hub | None:
        if self.hub is not None:
            return self.hub
        if not django_ready():
            return None
        from .recording.django_db import DjangoTaps

        hub = Hub(rootdir=self.settings.rootdir, show_params=self.settings.show_params)
        # what the taps collect follows the session's rules: nothing for a rule that is off
        hub.collect_param_keys = self.settings.action_for("duplicate") != "off"
        hub.watch_templates = self.settings.action_for("template-query") != "off"
        if self.settings.explain and self.settings.action_for("missing-index") != "off":
            from .recording.explain import ExplainProbe

            probe = ExplainProbe(hub)
            hub.probes.append(probe)
            hub.explain_capture = probe.capture
        taps = DjangoTaps(hub)
        taps.install()
        self.hub, self._taps = hub, taps
        self._add_lifecycle_probes(hub, taps)
        return hub

    def _rules_on(self, *rule_ids: str) -> bool:
        return any(self.settings.action_for(rule_id) != "off" for rule_id in rule_ids)

    def _add_lifecycle_probes(self, hub: Hub, taps: Any) -> None:
        # Only what an active rule reads is installed: a run that uses markers alone (no
        # --dbguard) gets no psycopg wrappers and no server census.
        if not self._rules_on("connection-leak", "open-transaction", "swallowed-db-error",
                              "async-orm", "pool-exhausted"):
            return
        from .recording.census import CensusProbe
        from .recording.psycopg import PsycopgProbe
        from .recording.txstate import DEFAULT_TEST_FILES, LifecycleProbe

        test_files = tuple(self.config.getini("python_files") or DEFAULT_TEST_FILES)
        raw = PsycopgProbe(hub, taps.note_peak)
        # order matters: the census names the backends the other probes could not
        probes: list[Any] = [LifecycleProbe(hub, taps, test_files + ("conftest.py",)), raw]
        self._closers.append(raw.uninstall)
        if self._rules_on("connection-leak", "open-transaction"):
            census = CensusProbe(hub, taps, raw, self.notes.append)
            probes.append(census)
            self._closers.append(census.close)
        hub.probes.extend(probes)

    def close(self) -> None:
        """Undo what recording installed (psycopg wrappers) and close the plugin's connections."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()

    def begin_test(self, item: pytest.Item) -> TestState | None:
        """Parse markers and start recording; MarkerError and Django problems fail the test."""
        if not self.wants_recording(item):
            return None
        budget: Budget | None = markers.closest(item, "query_budget")
        timeout: QueryTimeout | None = markers.closest(item, "query_timeout")
        if timeout is None and self.settings.query_timeout_ms and self.settings.enabled:
            timeout = QueryTimeout(self.settings.query_timeout_ms,
                                   source="--dbguard-query-timeout-ms")
        allowed = markers.allowed_rules(item)
        plan = self.stress_plan(item, markers.closest(item, "stress"))
        hub = self.ensure_hub()
        if hub is None:
            needs_django = (budget is not None or timeout is not None or plan is not None
                            or "dbguard" in getattr(item, "fixturenames", ()))
            if needs_django:
                raise markers.MarkerError(DJANGO_NOT_CONFIGURED)
            if not self._django_missing_noted:
                self.notes.append("Django is not configured in this run: nothing was recorded "
                                  "(configure pytest-django to use dbguard).")
                self._django_missing_noted = True
            return None
        actions = {
            rule_id: self.settings.action_for(
                rule_id, marker_driven=spec.marker is not None
                and item.get_closest_marker(spec.marker) is not None)
            for rule_id, spec in RULES.items()
        }
        if budget is None and self.settings.max_queries is not None and self.settings.enabled:
            actions["budget"] = self.settings.actions.get("budget", "fail")
        if timeout is not None:
            actions["query-timeout"] = self.settings.actions.get("query-timeout", "fail")
        if plan is not None:
            # --dbguard-stress turns the stress rules on for the tests it stresses
            for rule_id in STRESS_RULES:
                actions[rule_id] = self.settings.action_for(rule_id, marker_driven=True)
            for rule_id in STRESS_SUSPENDED_RULES:
                actions[rule_id] = "off"
        context = TestContext(
            nodeid=item.nodeid,
            budget=budget,
            max_queries=self.settings.max_queries if self.settings.enabled else None,
            options=self.settings.rule_options(),
        )
        state = TestState(hub.start_test(item.nodeid), context, actions, allowed,
                          timeout=timeout)
        state.stress = plan
        return state

    # -- stress mode ------------------------------------------------------------------------
    def stress_plan(self, item: pytest.Item, spec: StressSpec | None) -> StressPlan | None:
        """How this test is stressed in this run, or None; a usage error if it cannot be."""
        settings = self.settings
        if not settings.stress:
            return None
        transactional = _transactional(item)
        if spec is None:
            if settings.stress_scope != "all" or not transactional:
                return None
            spec = StressSpec(DEFAULT_THREADS, DEFAULT_ROUNDS, DEFAULT_TIMEOUT_S)
        if _is_unittest(item):
            raise markers.MarkerError(
                "@pytest.mark.stress runs pytest test functions; unittest-style test methods "
                "(TestCase / TransactionTestCase) cannot be stressed yet. Write the test as a "
                "function with @pytest.mark.django_db(transaction=True).")
        if transactional is False:
            raise markers.MarkerError(STRESS_NEEDS_COMMITS)
        return StressPlan(
            threads=settings.stress_threads or spec.threads,
            rounds=spec.rounds,
            timeout=settings.stress_timeout or spec.timeout,
            seed=settings.stress_seed,
            lock_wait_ms=settings.lock_wait_ms,
            show_params=settings.show_params,
        )

    def run_stress(self, item: pytest.Function, state: TestState) -> None:
        """Run the test body under stress; thread failures fail the test with their index."""
        from .stress.report import (
            failure_report,
            make_site_of,
            make_user_site_of,
            test_arguments,
        )
        from .stress.runner import StressRunner

        assert state.stress is not None and state.recorder is not None and self.hub is not None
        func, kwargs = test_arguments(item.obj, item.funcargs)
        runner = StressRunner(state.stress, func, kwargs, item.nodeid,
                              make_site_of(self.hub.classifier),
                              transactional=_transactional(item) is True,
                              display_path=self.hub.classifier.display_path,
                              site_of_frame=make_user_site_of(self.hub.classifier))
        try:
            runner.run()
        finally:
            state.recorder.facts["stress"] = runner.facts()
        if runner.vendor != "postgresql" and not self._stress_vendor_noted:
            self._stress_vendor_noted = True
            self.notes.append(f"stress mode: {runner.lock_analysis}.")
        errors = runner.errors
        if not errors:
            return
        skips = [e for e in errors if isinstance(e.exc, pytest.skip.Exception)]
        if len(skips) == len(errors):
            raise skips[0].exc
        pytest.fail(failure_report(runner), pytrace=False)

    def note_call_error(self, state: TestState | None, exc: BaseException) -> None:
        """The exception a (not stressed) test body raised, for rules that ask what propagated."""
        if state is None or state.recorder is None or state.stress is not None:
            return
        from .stress.watchdog import sqlstate_of

        state.recorder.facts["call_error"] = {"type": type(exc).__name__,
                                              "sqlstate": sqlstate_of(exc)}

    @contextmanager
    def phase(self, state: TestState | None, name: str) -> Iterator[None]:
        if state is None or state.recorder is None:
            yield
            return
        state.recorder.start_phase(name)
        timeouts = None
        try:
            if name == "call" and state.timeout is not None:
                timeouts = self._query_timeouts()
                timeouts.start(state.recorder, state.timeout.ms, state.timeout.using)
            yield
        finally:
            try:
                if timeouts is not None:
                    timeouts.stop()
            finally:
                state.recorder.stop_phase()

    def _query_timeouts(self) -> Any:
        if self._timeouts is None:
            from .recording.timeouts import QueryTimeouts

            assert self.hub is not None
            self._timeouts = QueryTimeouts(self.hub)
        return self._timeouts

    @contextmanager
    def shared_fixture(self) -> Iterator[None]:
        if self.hub is None or self.hub.recorder is None:
            yield
            return
        with self.hub.shared_fixture():
            yield

    # -- judging ----------------------------------------------------------------------------
    def judge(self, state: TestState, stage: str, excinfo: Any = None) -> list[Finding]:
        assert state.recorder is not None
        if excinfo is not None and stage == "call" and self.hub is not None:
            from .recording.txstate import describe_raised

            state.recorder.facts["raised"] = describe_raised(self.hub.classifier, excinfo.value)
        record = state.recorder.record()
        state.record = record
        found = evaluate(record, state.context, state.actions, state.allowed, stage=stage)
        state.findings.extend(found)
        return found

    def finish_test(self, item: pytest.Item, state: TestState) -> dict[str, Any]:
        record = state.record or (state.recorder.record() if state.recorder else None)
        assert record is not None
        duration_ms = (time.perf_counter() - state.started) * 1000.0
        entry = test_entry(record, state.findings, duration_ms)
        if self.hub is not None:
            self.shared_fixture_queries = self.hub.shared_query_count
            self.hub.finish_test()
        if self._timeouts is not None:
            self._timeouts.retry_pending()
        return entry

    # -- collecting (runs on the xdist controller too) ------------------------------------
    def collect_report(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        previous = self.outcomes.get(nodeid)
        outcome = _outcome_of(report)
        if outcome is not None and _OUTCOME_RANK[outcome] > _OUTCOME_RANK.get(previous or "", -1):
            self.outcomes[nodeid] = outcome
        entry = getattr(report, "dbguard_entry", None)
        if entry is not None:
            self.entries[nodeid] = entry
            if "shared_fixture_queries" in entry:
                self.shared_fixture_queries = max(self.shared_fixture_queries,
                                                  entry["shared_fixture_queries"])

    def finished_entries(self) -> list[dict[str, Any]]:
        entries = []
        for nodeid, entry in self.entries.items():
            entry = dict(entry)
            entry["outcome"] = self.outcomes.get(nodeid, "passed")
            entry.pop("shared_fixture_queries", None)
            entries.append(entry)
        return entries

    def terminal_lines(self, verbosity: int) -> list[str]:
        entries = self.finished_entries()
        warnings = [f for e in entries for f in e["findings"]
                    if f["action"] == "warn" and not f.get("allowed")]
        return terminal.summary_lines(entries, self.shared_fixture_queries, verbosity,
                                      warnings, self.notes)

    def write_reports(self) -> None:
        if self.settings.json_path:
            document = json_report.build(self.finished_entries(), self.shared_fixture_queries)
            json_report.write(self.settings.json_path, document)


def _transactional(item: pytest.Item) -> bool | None:
    """True: real commits (transaction=True); False: pytest-django's wrapping transaction;
    None: the test declares no database access."""
    names = set(getattr(item, "fixturenames", ()))
    if names & TRANSACTIONAL_FIXTURES:
        return True
    marker = item.get_closest_marker("django_db")
    if marker is not None:
        transaction = marker.kwargs.get("transaction", marker.args[0] if marker.args else False)
        return bool(transaction or marker.kwargs.get("reset_sequences")
                    or marker.kwargs.get("serialized_rollback"))
    if "db" in names:
        return False
    return None


def _is_unittest(item: pytest.Item) -> bool:
    import unittest

    cls = getattr(item, "cls", None)
    return cls is not None and issubclass(cls, unittest.TestCase)


_OUTCOME_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 1, "failed": 2, "error": 3}


def _outcome_of(report: pytest.TestReport) -> str | None:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when == "call":
        return report.outcome
    if report.failed:
        return "error"
    if report.skipped:
        return "skipped"
    return "passed" if report.when == "setup" else None


def failure_text(findings: list[Finding]) -> str:
    return "\n\n".join(f.render() for f in findings)


class DbguardFixture:
    """The `dbguard` fixture: live access to what the current test has recorded."""

    def __init__(self, state: TestState | None) -> None:
        self._state = state

    def _recorder(self) -> TestRecorder:
        if self._state is None or self._state.recorder is None:
            raise RuntimeError(DJANGO_NOT_CONFIGURED)
        return self._state.recorder

    @property
    def queries(self) -> list[Query]:
        """Every query the test ran so far (setup, then the call phase up to now)."""
        recorder = self._recorder()
        out: list[Query] = []
        for name, phase_record in recorder.phase_records.items():
            if name != recorder.current_phase:
                out.extend(phase_record.queries())
        out.extend(self._live().queries())
        return out

    def _live(self, rows: Any = None) -> Any:
        recorder = self._recorder()
        hub = recorder.hub
        return build_phase(recorder.current_phase or "call",
                           list(recorder.live_rows() if rows is None else rows),
                           dict(hub.unit_labels), hub.catalog)

    def count(self, using: str | list[str] | None = None, count_tx: bool = False) -> int:
        """Queries of the running phase so far (transaction control excluded by default)."""
        return self._live().count(using, count_tx)

    @contextmanager
    def budget(self, n: int, using: str | list[str] | None = None,
               count_tx: bool = False) -> Iterator[None]:
        """Fail with dbguard's grouped message if the block runs more than n queries."""
        try:
            limit = markers.query_budget(n, using=using, count_tx=count_tx)
        except markers.MarkerError as exc:
            raise TypeError(f"dbguard.budget(): {exc}") from None
        recorder = self._recorder()
        rows = recorder.live_rows()
        start = len(rows)
        yield
        block = self._live(rows[start:])
        finding = describe_excess(block, Budget(limit.limit, limit.using, limit.count_tx,
                                                source="dbguard.budget() block"),
                                  recorder.nodeid, where=recorder.current_phase or "call")
        if finding is not None:
            pytest.fail(finding.render(), pytrace=False)

    @property
    def findings(self) -> list[Finding]:
        return list(self._state.findings) if self._state else []

    @property
    def stress_index(self) -> int | None:
        """This thread's index (0..threads-1) while the test runs under stress, else None."""
        from .stress.runner import current_index

        return current_index()
