"""One pytest run as dbguard sees it: which tests to record, their records, findings and reports.

plugin.py stays a table of contents of hooks; the work those hooks delegate lives here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import markers
from .config import Settings
from .events import Finding, Query, TestRecord
from .recording.recorder import Hub, TestRecorder, build_phase
from .recording.restore import FACT as RESTORED_FACT
from .recording.restore import RESTORED_RULES, mention_restore, restore_connections
from .reporting import baseline as baseline_file
from .reporting import json_report, terminal
from .reporting.entries import RunResults, test_entry
from .reporting.outputs import BASELINE_KEPT_NOTE, mark_interrupted
from .rules import RULES, TestContext, evaluate
from .rules.budget import Budget, describe_excess
from .rules.shape import QueryTimeout
from .stress import DEFAULT_ROUNDS, DEFAULT_THREADS, DEFAULT_TIMEOUT_S, StressPlan, StressSpec
from .stress.scope import StressLedger, unstressed_reason

DJANGO_NOT_CONFIGURED = (
    "dbguard needs Django: configure pytest-django (DJANGO_SETTINGS_MODULE in pytest.ini or "
    "the environment) before using dbguard markers or the dbguard fixture."
)

STRESS_RULES = ("deadlock", "lock-wait", "stress-hang")
# A stressed body runs threads x rounds times in one phase: every query repeats by design and
# lock waits make queries slow. These rules judge the test's normal (unstressed) run instead.
STRESS_SUSPENDED_RULES = ("budget", "nplusone", "nplusone-loop", "duplicate", "slow-query",
                          "regression")
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
    call_completed: bool = False
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
        # xdist: shared-fixture query totals per worker ("main" without xdist), the SQL of
        # every fingerprint seen, the tests each collection selected, workers that crashed
        self.shared_by_worker: dict[str, int] = {}
        self.sql: dict[str, str] = {}
        self.selected: set[str] | None = None
        self.crashed_workers: list[str] = []
        self._results: RunResults | None = None
        self._new_baseline: baseline_file.Baseline | None = None
        self._shared_teardowns: dict[int, ExitStack] = {}
        # set by pytest_sessionfinish before anything reads results(): Ctrl-C ended the run
        self.interrupted = False
        self.report_errors: list[str] = []
        self.readonly_checked = False
        self.stress_ledger = StressLedger()

    # -- deciding what to record ----------------------------------------------------------
    @property
    def records_every_test(self) -> bool:
        settings = self.settings
        # --dbguard-stress-scope=all stresses tests that carry no dbguard marker at all
        return (settings.enabled or settings.baseline is not None
                or (settings.stress and settings.stress_scope == "all"))

    def wants_recording(self, item: pytest.Item) -> bool:
        if self.records_every_test:
            return True
        if any(item.get_closest_marker(name) for name in markers.RECORDING_MARKERS):
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
        _check_aliases(budget, timeout)
        if not self.readonly_checked:
            self.readonly_checked = True  # one failure, not one per test
            self._check_readonly_aliases()
        actions = {
            rule_id: self.settings.action_for(
                rule_id, marker_driven=spec.marker is not None
                and item.get_closest_marker(spec.marker) is not None)
            for rule_id, spec in RULES.items()
        }
        options: dict[str, Any] = self.settings.rule_options()
        if self.settings.compares_baseline:
            assert self.settings.baseline is not None
            options["baseline"] = self.settings.baseline.tests.get(item.nodeid)
            options["baseline_tolerance"] = self.settings.baseline_tolerance
            actions["regression"] = self.settings.actions.get("regression", "fail")
        else:
            actions["regression"] = "off"
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
            options=options,
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
            if settings.stress_scope != "all":
                return None
            reason = unstressed_reason(item, transactional)
            if reason is not None:
                self.stress_ledger.left[item.nodeid] = reason
                return None
            if not transactional:
                return None
            spec = StressSpec(DEFAULT_THREADS, DEFAULT_ROUNDS, DEFAULT_TIMEOUT_S)
        if _is_unittest(item):
            raise markers.MarkerError(
                "@pytest.mark.stress runs pytest test functions; unittest-style test methods "
                "(TestCase / TransactionTestCase) cannot be stressed yet. Write the test as a "
                "function with @pytest.mark.django_db(transaction=True).")
        if transactional is False:
            raise markers.MarkerError(STRESS_NEEDS_COMMITS)
        self.stress_ledger.stressed.append(item.nodeid)
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
                if name == "call":
                    self._restore_connections(state)

    def _check_readonly_aliases(self) -> None:
        """Checked here when Django was configured after pytest_configure."""
        from .aliases import unknown_alias_message

        message = unknown_alias_message("--dbguard-readonly-alias", self.settings.readonly_aliases)
        if message:
            raise markers.MarkerError(f"{message} Fix the option's value.")

    def _restore_connections(self, state: TestState) -> None:
        """Undo an open transaction the test body left, once its state is recorded."""
        assert state.recorder is not None
        if all(state.actions.get(rule) in ("off", None) for rule in RESTORED_RULES):
            return
        try:
            state.recorder.facts[RESTORED_FACT] = restore_connections(state.recorder.facts)
        except Exception as exc:
            self.internal_errors.append(f"{state.context.nodeid}: restoring its connections "
                                        f"failed: {type(exc).__name__}: {exc}")

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

    def begin_shared_teardown(self, key: int) -> None:
        """A session/module fixture starts its teardown: charge its queries to the session."""
        if self.hub is None:
            return
        stack = ExitStack()
        stack.enter_context(self.hub.shared_fixture())
        self._shared_teardowns[key] = stack

    def end_shared_teardown(self, key: int) -> None:
        stack = self._shared_teardowns.pop(key, None)
        if stack is not None:
            stack.close()

    # -- judging ----------------------------------------------------------------------------
    def judge(self, state: TestState, stage: str, excinfo: Any = None) -> list[Finding]:
        assert state.recorder is not None
        if excinfo is not None and stage == "call" and self.hub is not None:
            from .recording.txstate import describe_raised

            state.recorder.facts["raised"] = describe_raised(self.hub.classifier, excinfo.value)
        record = state.recorder.record()
        state.record = record
        found = evaluate(record, state.context, state.actions, state.allowed, stage=stage)
        found = mention_restore(found, state.recorder.facts.get(RESTORED_FACT) or [])
        state.findings.extend(found)
        return found

    def finish_test(self, item: pytest.Item, state: TestState) -> dict[str, Any]:
        record = state.record or (state.recorder.record() if state.recorder else None)
        assert record is not None
        duration_ms = (time.perf_counter() - state.started) * 1000.0
        path, line = item.location[0], item.location[1]
        entry = test_entry(record, state.findings, duration_ms,
                           call_completed=state.call_completed,
                           location=(path.replace("\\", "/"), (line or 0) + 1))
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
                # each entry carries its worker's running total: the last one seen stands in
                # for a worker that crashed before sending its final numbers
                worker = _worker_id(report)
                self.shared_by_worker[worker] = max(self.shared_by_worker.get(worker, 0),
                                                    entry["shared_fixture_queries"])
                self.shared_fixture_queries = sum(self.shared_by_worker.values())

    def note_selected(self, nodeids: list[str]) -> None:
        """Tests a collection selected (after -k/-m): what --dbguard-baseline-prune keeps."""
        if self.selected is None:
            self.selected = set()
        self.selected.update(nodeids)

    # -- xdist: session-level data crosses from workers through workeroutput ---------------
    def worker_payload(self) -> dict[str, Any]:
        """Plain data for the controller; per-test entries travel on the reports instead."""
        return {
            "shared_fixture_queries": self.hub.shared_query_count if self.hub else 0,
            "internal_errors": list(self.internal_errors),
            "notes": list(self.notes),
            "sql": self.seen_sql(),
            "stress": self.stress_ledger.payload(),
        }

    def merge_worker(self, worker: str, payload: dict[str, Any] | None,
                     error: object = None) -> None:
        if error is not None:
            self.crashed_workers.append(f"{worker}: {error}".strip())
        if not payload:
            return
        self.shared_by_worker[worker] = int(payload.get("shared_fixture_queries", 0))
        self.shared_fixture_queries = sum(self.shared_by_worker.values())
        self.internal_errors.extend(f"[{worker}] {e}" for e in payload.get("internal_errors", ()))
        for note in payload.get("notes", ()):
            if note not in self.notes:
                self.notes.append(note)
        self.sql.update(payload.get("sql", {}))
        self.stress_ledger.merge(payload.get("stress"))

    def seen_sql(self) -> dict[str, str]:
        sql = dict(self.sql)
        if self.hub is not None:
            for shape in self.hub.catalog.shapes:
                if not shape.is_transaction_control:
                    sql.setdefault(shape.fingerprint_id, shape.fingerprint)
        return sql

    def finished_entries(self) -> list[dict[str, Any]]:
        entries = []
        for nodeid, entry in self.entries.items():
            entry = dict(entry)
            entry["outcome"] = self.outcomes.get(nodeid, "passed")
            entry.pop("shared_fixture_queries", None)
            entries.append(entry)
        return entries

    def results(self) -> RunResults:
        """The merged run, computed once the run is over (writers and the terminal share it)."""
        if self._results is not None:
            return self._results
        entries = sorted(self.finished_entries(), key=lambda e: e["nodeid"])
        results = RunResults(entries=entries, shared_fixture_queries=self.shared_fixture_queries,
                             sql=self.seen_sql(), crashed_workers=list(self.crashed_workers),
                             notes=list(self.notes))
        if self.records_every_test and self.entries:
            results.missing_records = sorted(n for n in self.outcomes if n not in self.entries)
        settings = self.settings
        if self.interrupted:
            mark_interrupted(results)
            if settings.baseline_update:
                results.notes.append(BASELINE_KEPT_NOTE)
        if settings.baseline is not None and not (self.interrupted and settings.baseline_update):
            if settings.baseline_update:
                self._new_baseline, results.baseline_update = baseline_file.updated(
                    settings.baseline, entries, results.sql, self.selected,
                    settings.baseline_prune)
            else:
                assert settings.baseline_tolerance is not None
                results.comparison = baseline_file.compare(settings.baseline, entries,
                                                           settings.baseline_tolerance)
        results.notes.extend(self._run_notes(results))
        self._results = results
        return results

    def _run_notes(self, results: RunResults) -> list[str]:
        notes = []
        if self.settings.stress:
            notes.extend(self.stress_ledger.lines(self.settings.stress_scope))
        if results.crashed_workers:
            notes.append("xdist workers crashed: " + "; ".join(results.crashed_workers))
        if results.missing_records:
            shown = ", ".join(results.missing_records[:10])
            more = len(results.missing_records) - 10
            notes.append(f"no dbguard record for {len(results.missing_records)} tests (worker "
                         f"crash or internal error): {shown}" + (f" and {more} more"
                                                                 if more > 0 else ""))
        comparison = results.comparison
        if comparison is not None:
            notes.append(
                f"baseline {self.settings.baseline_path}: {len(comparison.regressions)} "
                f"regressions"
                + (f" ({len(comparison.allowed)} more allowed)" if comparison.allowed else "")
                + f", {len(comparison.within_tolerance)} within tolerance "
                f"{comparison.tolerance}, {len(comparison.improvements)} improved, "
                f"{len(comparison.new_tests)} new tests not in the baseline")
            if comparison.improvements:
                notes.append("tests now run fewer queries than the baseline: lock the gain in "
                             "with --dbguard-baseline-update")
        update = results.baseline_update
        if update is not None:
            notes.append(
                f"baseline {self.settings.baseline_path} updated: {len(update.added)} added, "
                f"{len(update.changed)} changed, {len(update.pruned)} pruned")
            if update.not_updated:
                notes.append(f"{len(update.not_updated)} tests kept their old baseline entry "
                             f"because their body did not run to the end (skipped, failed "
                             f"with an exception, errored)")
        return notes

    def terminal_lines(self, verbosity: int) -> list[str]:
        results = self.results()
        warnings = [f for e in results.entries for f in e["findings"]
                    if f["action"] == "warn" and not f.get("allowed")]
        return terminal.summary_lines(results.entries, results.shared_fixture_queries,
                                      verbosity, warnings, results.notes)

    def write_reports(self) -> None:
        """Write every requested report, each on its own (a failed write is one line in
        report_errors); the baseline last and only when every report was written."""
        # imported here: a run that asks for no report never loads the writers
        from .reporting import html, markdown, sarif
        from .reporting.outputs import write_each

        settings = self.settings
        results = self.results()
        jobs: list[tuple[str, str, Any]] = []
        if settings.json_path:
            document = json_report.build(results.entries, results.shared_fixture_queries)
            document["summary"] = results.summary()
            if results.interrupted:
                document["interrupted"] = True
            jobs.append(("JSON report", settings.json_path,
                         lambda: json_report.write(settings.json_path, document)))
        for label, path, writer in (("Markdown summary", settings.md_path, markdown.write),
                                    ("HTML report", settings.html_path, html.write),
                                    ("SARIF report", settings.sarif_path, sarif.write)):
            if path:
                jobs.append((label, path, lambda w=writer, p=path: w(p, results)))
        self.report_errors.extend(write_each(jobs))
        if self._new_baseline is None:
            return
        assert settings.baseline_path is not None
        baseline_path, new_baseline = settings.baseline_path, self._new_baseline
        errors = write_each([("baseline", baseline_path,
                              lambda: baseline_file.write(baseline_path, new_baseline))])
        if errors:
            self.report_errors.extend(errors)
            # the summary must not claim an update that did not happen
            results.notes[:] = [n for n in results.notes
                                if not n.startswith(f"baseline {baseline_path} updated")]


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


def _check_aliases(budget: Budget | None, timeout: QueryTimeout | None) -> None:
    """A marker's `using=` naming no database would silently check nothing."""
    from .aliases import unknown_alias_message

    for what, parsed in (("@pytest.mark.query_budget", budget),
                         ("@pytest.mark.query_timeout", timeout)):
        message = unknown_alias_message(f"invalid {what}", parsed.using if parsed else None)
        if message:
            raise markers.MarkerError(message)


def _is_unittest(item: pytest.Item) -> bool:
    import unittest

    cls = getattr(item, "cls", None)
    return cls is not None and issubclass(cls, unittest.TestCase)


_OUTCOME_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 1, "failed": 2, "error": 3}


def _worker_id(report: pytest.TestReport) -> str:
    # pytest-xdist sets report.node (the WorkerController) on reports it relays
    node = getattr(report, "node", None)
    gateway = getattr(node, "gateway", None)
    return str(getattr(gateway, "id", "main"))


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
