"""One test as dbguard runs it: whether to record it, its phases, its stress run, its findings.

plugin.py stays a table of contents of hooks; the per-test work they delegate lives here. The
policy of which rules judge a test is policy.py, recording set-up is recording/assembly.py, the
run's merged results are results.py, and the `dbguard` fixture is fixture.py.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import aliases, markers, policy
from .backends import for_vendor
from .config import Settings
from .events import Finding, QueryRow, TestRecord
from .facts import CALL_ERROR, CallError
from .recording.assembly import DJANGO_NOT_CONFIGURED, Recording, django_ready
from .recording.recorder import Hub, TestRecorder
from .recording.restore import FACT as RESTORED_FACT
from .recording.restore import mention_restore, restore_after_call
from .reporting import terminal
from .reporting.entries import ReportEntry, RunResults, test_entry
from .results import RunCollector
from .rules import TestContext, active_rules, evaluate
from .rules.budget import Budget
from .rules.shape import QueryTimeout
from .stress import StressPlan, StressSpec
from .stress.plan import is_unittest, plan_for, transactional


@dataclass(slots=True)
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
    body_code: Any = None  # the test function's code: its top-level calls are units of work
    unittest_item: Any = None  # weakref to a unittest item: its setUp/tearDown are not the body
    # the run's session: the per-test hooks reach it from here, not through config.stash
    session: DbguardSession | None = None


class DbguardSession:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.hub: Hub | None = None
        self.recording: Recording | None = None
        self.run = RunCollector(settings)
        # the same lists as the run's: per-test code adds to them, reports read them
        self.internal_errors = self.run.internal_errors
        self.notes = self.run.notes
        self._django_missing_noted = False
        self._stress_vendor_noted = False
        self._shared_teardowns: dict[int, list[QueryRow] | None] = {}
        # each rule's action worked out once per distinct set of facts, not per test
        self._actions = policy.ActionTable(settings.rules, settings)
        self._rule_markers = policy.rule_markers(settings.rules)
        self.readonly_checked = False  # --dbguard-readonly-alias checked against DATABASES
        # rules after whose finding the test's connections are put back for the next test
        self._restoring = frozenset(s.id for s in settings.rules if s.restores_connection)
        self._unittest_parents: dict[Any, bool] = {}
        self._active_rules: dict[tuple[int, str], tuple[dict[str, str], Any]] = {}
        self._entry_statements = settings.entries_need_statements

    # -- deciding what to record ----------------------------------------------------------
    @property
    def records_every_test(self) -> bool:
        return self.run.records_every_test

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
        from .recording.txstate import DEFAULT_TEST_FILES

        settings = self.settings
        recording = Recording.assemble(
            policy.probes_needed(settings.rules, settings), rootdir=settings.rootdir,
            show_params=settings.show_params,
            test_files=tuple(self.config.getini("python_files") or DEFAULT_TEST_FILES),
            note=self.notes.append)
        self.recording, self.hub = recording, recording.hub
        self.run.hub = recording.hub
        return recording.hub

    def close(self) -> None:
        """Undo what recording installed (psycopg wrappers) and close the plugin's connections."""
        if self.recording is not None:
            self.recording.close()

    def begin_test(self, item: pytest.Item) -> TestState | None:
        """Parse markers and start recording; MarkerError and Django problems fail the test."""
        if not self.wants_recording(item):
            return None
        # one walk over the test's markers (each get_closest_marker walks its node chain)
        present = {mark.name for mark in item.iter_markers()}
        budget: Budget | None = (markers.closest(item, "query_budget")
                                 if "query_budget" in present else None)
        timeout: QueryTimeout | None = (markers.closest(item, "query_timeout")
                                        if "query_timeout" in present else None)
        if timeout is None and self.settings.query_timeout_ms and self.settings.enabled:
            timeout = QueryTimeout(self.settings.query_timeout_ms,
                                   source="--dbguard-query-timeout-ms")
        allowed = (markers.allowed_rules(item, self.settings.rules.specs)
                   if "dbguard_allow" in present else {})
        # the stress marker is only parsed when the run stresses anything
        plan = (self.stress_plan(item, markers.closest(item, "stress"))
                if self.settings.stress else None)
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
        if budget is not None or timeout is not None:
            aliases.check_marker_aliases(budget, timeout)
        if not self.readonly_checked:
            self.readonly_checked = True  # one failure, not one per test
            aliases.check_readonly_in_test(self.settings.rule_options.get("readonly_aliases"))
        rule_markers = present & self._rule_markers
        nodeid = item.nodeid  # a property that builds the string on every read (pytest 9)
        actions = self._actions.shared(
            policy.TestFacts(markers=frozenset(rule_markers), stressed=plan is not None)
            if rule_markers or plan is not None else policy.RUN_WIDE)
        # the run's options, shared by every test (rules read them); a copy only with a baseline
        options: dict[str, Any] = self.settings.rule_options
        if self.settings.compares_baseline:
            assert self.settings.baseline is not None
            options = dict(options)
            options["baseline"] = self.settings.baseline.tests.get(nodeid)
            options["known_findings"] = frozenset((options["baseline"] or {}).get("findings", ()))
            options["baseline_tolerance"] = self.settings.baseline_tolerance
        context = TestContext(
            nodeid=nodeid,
            budget=budget,
            max_queries=self.settings.max_queries if self.settings.enabled else None,
            options=options,
        )
        state = TestState(hub.start_test(nodeid), context, actions, allowed,
                          timeout=timeout, session=self)
        state.stress = plan
        if self._is_unittest(item):
            state.unittest_item = weakref.ref(item)
        if plan is None and self.recording is not None:
            state.body_code = self.recording.body_code(getattr(item, "obj", None))
        return state

    def _is_unittest(self, item: pytest.Item) -> bool:
        """is_unittest, once per parent node (item.cls walks the node chain every time)."""
        parent = item.parent
        known = self._unittest_parents.get(parent)
        if known is None:
            known = self._unittest_parents[parent] = is_unittest(item)
        return known

    # -- stress mode ------------------------------------------------------------------------
    def stress_plan(self, item: pytest.Item, spec: StressSpec | None) -> StressPlan | None:
        """How this test is stressed in this run, or None; a usage error if it cannot be."""
        return plan_for(item, spec, self.settings, self.run.stress_ledger)

    def run_stress(self, item: pytest.Function, state: TestState) -> None:
        """Run the test body under stress; thread failures fail the test with their index."""
        from .stress.report import failure_report, run_stressed

        assert state.stress is not None and state.recorder is not None and self.hub is not None
        assert self.recording is not None
        runner = run_stressed(state.stress, item, self.hub, self.recording.body_code,
                              transactional(item) is True, state.recorder.facts)
        if not for_vendor(runner.vendor or "").samples_locks and not self._stress_vendor_noted:
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
        from .backends.postgresql import sqlstate_of

        state.recorder.facts[CALL_ERROR] = CallError(type(exc).__name__, sqlstate_of(exc))

    # -- phases: setup and teardown only switch where rows go; the call phase does more ------
    def begin_call(self, state: TestState) -> Any:
        """The test body starts: its query timeout, its units of work, a TestCase's
        setUp/tearDown charged to their phases. Returns what end_call() takes."""
        recorder = state.recorder
        assert recorder is not None
        recorder.start_phase("call")
        timeouts = steps = None
        try:
            if state.timeout is not None:
                assert self.recording is not None
                timeouts = self.recording.query_timeouts()
                timeouts.start(recorder, state.timeout.ms, state.timeout.using)
            if self.recording is not None:
                case = state.unittest_item() if state.unittest_item is not None else None
                steps = self.recording.begin_call(recorder, state.body_code,
                                                  getattr(case, "instance", None))
        except BaseException:
            self.end_call(state, (timeouts, steps))
            raise
        return (timeouts, steps)

    def end_call(self, state: TestState, begun: Any) -> None:
        """The test body is over: stop what begin_call started, record the phase, and put
        back connections the body left in a transaction."""
        recorder = state.recorder
        assert recorder is not None
        timeouts, steps = begun
        try:
            try:
                if timeouts is not None:
                    timeouts.stop()
            finally:
                if steps is not None and self.recording is not None:
                    self.recording.end_call(steps)
        finally:
            recorder.stop_phase()
            self._restore_connections(state)

    def _restore_connections(self, state: TestState) -> None:
        """Undo an open transaction the test body left, once its state is recorded."""
        assert state.recorder is not None
        try:
            restore_after_call(state.recorder.facts, state.actions, self._restoring)
        except Exception as exc:
            self.internal_errors.append(f"{state.context.nodeid}: restoring its connections "
                                        f"failed: {type(exc).__name__}: {exc}")

    @contextmanager
    def shared_fixture(self) -> Iterator[None]:
        if self.hub is None or self.hub.recorder is None:
            yield
            return
        with self.hub.shared_fixture():
            yield

    def begin_shared_teardown(self, key: int) -> None:
        """A session/module fixture starts its teardown: charge its queries to the session."""
        hub = self.hub
        if hub is None:
            return
        if self.recording is not None:
            self.recording.before_shared_teardown()
        # pytest-django's class-scoped unittest fixture does this after every test
        self._shared_teardowns[key] = hub.enter_shared()

    def end_shared_teardown(self, key: int) -> None:
        hub = self.hub
        if hub is not None and key in self._shared_teardowns:
            hub.leave_shared(self._shared_teardowns.pop(key))

    # -- judging ----------------------------------------------------------------------------
    def judge(self, state: TestState, stage: str, excinfo: Any = None) -> list[Finding]:
        assert state.recorder is not None
        if excinfo is not None and stage == "call" and self.hub is not None:
            from .recording.txstate import describe_raised

            state.recorder.facts["raised"] = describe_raised(self.hub.classifier, excinfo.value)
        record = state.recorder.record()
        state.record = record
        found = evaluate(record, state.context, state.actions, state.allowed, stage=stage,
                         registry=self.settings.rules, active=self._active(state.actions, stage))
        found = mention_restore(found, state.recorder.facts.get(RESTORED_FACT) or [],
                                self._restoring)
        state.findings.extend(found)
        return found

    def _active(self, actions: dict[str, str], stage: str) -> tuple[tuple[Any, str], ...]:
        """The rules that judge `stage` under these actions: once per ActionTable entry."""
        key = (id(actions), stage)
        active = self._active_rules.get(key)
        if active is None or active[0] is not actions:
            active = self._active_rules[key] = (
                actions, active_rules(self.settings.rules, actions, stage))
        return active[1]

    def finish_test(self, item: pytest.Item, state: TestState) -> ReportEntry:
        record = state.record or (state.recorder.record() if state.recorder else None)
        assert record is not None
        duration_ms = (time.perf_counter() - state.started) * 1000.0
        path, line = item.location[0], item.location[1]
        entry = test_entry(record, state.findings, duration_ms,
                           call_completed=state.call_completed,
                           location=(path.replace("\\", "/"), (line or 0) + 1),
                           allowed=state.allowed, fingerprints=self._entry_statements)
        if self.hub is not None:
            self.hub.finish_test()
        if self.recording is not None:
            self.recording.after_test()
        return entry

    @property
    def shared_fixture_queries(self) -> int:
        """Queries this process charged to session/module fixtures so far."""
        return self.hub.shared_query_count if self.hub is not None else 0

    # -- the run (on the xdist controller too) ----------------------------------------------
    def collect_report(self, report: pytest.TestReport) -> None:
        self.run.collect_report(report)

    def note_selected(self, nodeids: list[str]) -> None:
        self.run.note_selected(nodeids)

    def worker_payload(self) -> dict[str, Any]:
        return self.run.worker_payload()

    def merge_worker(self, worker: str, payload: dict[str, Any] | None,
                     error: object = None) -> None:
        self.run.merge_worker(worker, payload, error)

    @property
    def entries(self) -> dict[str, ReportEntry]:
        return self.run.entries

    def results(self) -> RunResults:
        return self.run.results()

    def terminal_lines(self, verbosity: int) -> list[str]:
        return terminal.summary_lines(self.results(), verbosity)

    def write_reports(self) -> None:
        """Every requested report, each on its own, then the baseline (results.py)."""
        self.run.write_outputs()

def failure_text(findings: list[Finding]) -> str:
    return "\n\n".join(f.render() for f in findings)
