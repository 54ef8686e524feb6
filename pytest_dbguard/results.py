"""The run's results: per-test entries and outcomes, merged across xdist workers, and notes."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .reporting.entries import ReportEntry, RunResults
from .stress.scope import StressLedger

INTERRUPTED_NOTE = ("the run was interrupted (Ctrl-C): the reports cover the tests that ran "
                    "before it")
BASELINE_KEPT_NOTE = "the baseline file was not updated because the run was interrupted"

if TYPE_CHECKING:
    import pytest

    from . import baseline as baseline_file
    from .config import Settings
    from .recording.recorder import Hub


class RunCollector:
    """Collects what each test's report carries; runs on the xdist controller too."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.hub: Hub | None = None  # this process's recording, once a test was recorded
        self.entries: dict[str, ReportEntry] = {}
        self.outcomes: dict[str, str] = {}
        self.internal_errors: list[str] = []
        self.notes: list[str] = []
        self.shared_fixture_queries = 0
        # xdist: shared-fixture query totals per worker ("main" without xdist), the SQL of
        # every fingerprint seen, the tests each collection selected, workers that crashed
        self.shared_by_worker: dict[str, int] = {}
        self.sql: dict[str, str] = {}
        self.selected: set[str] | None = None
        self.crashed_workers: list[str] = []
        self._results: RunResults | None = None
        self._new_baseline: baseline_file.Baseline | None = None
        self.stress_ledger = StressLedger()
        # set by pytest_sessionfinish before anything reads results(): Ctrl-C ended the run
        self.interrupted = False
        self.report_errors: list[str] = []  # one sentence per end-of-run file not written

    @property
    def records_every_test(self) -> bool:
        settings = self.settings
        # --dbguard-stress-scope=all stresses tests that carry no dbguard marker at all
        return (settings.enabled or settings.baseline is not None
                or (settings.stress and settings.stress_scope == "all"))

    def collect_report(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        previous = self.outcomes.get(nodeid)
        outcome = _outcome_of(report)
        if outcome is not None and _OUTCOME_RANK[outcome] > _OUTCOME_RANK.get(previous or "", -1):
            self.outcomes[nodeid] = outcome
        entry = getattr(report, "dbguard_entry", None)
        if entry is not None:
            self.entries[nodeid] = entry
        shared = getattr(report, "dbguard_shared_queries", None)
        if shared is not None:
            # each teardown report carries its worker's running total: the last one seen stands
            # in for a worker that crashed before sending its final numbers
            worker = _worker_id(report)
            self.shared_by_worker[worker] = max(self.shared_by_worker.get(worker, 0), shared)
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

    def finished_entries(self) -> list[ReportEntry]:
        entries = []
        for nodeid, entry in self.entries.items():
            # in place, not copied: the run is over, and a copy of every entry would double
            # what dbguard keeps for a large suite
            entry["outcome"] = self.outcomes.get(nodeid, "passed")
            entries.append(entry)
        return entries

    def results(self) -> RunResults:
        """The merged run, computed once the run is over (writers and the terminal share it)."""
        if self._results is not None:
            return self._results
        from .reporting import run

        settings = self.settings
        entries = sorted(self.finished_entries(), key=lambda e: e["nodeid"])
        results = RunResults(entries=entries, shared_fixture_queries=self.shared_fixture_queries,
                             sql=self.seen_sql(), crashed_workers=list(self.crashed_workers),
                             session_notes=list(self.notes),
                             # only the JSON report says what ran (the installed version is
                             # read from the package metadata, a scan of sys.path)
                             meta=run.run_meta(settings) if settings.json_path else {},
                             rules={spec.id: (spec.default_action, spec.summary)
                                    for spec in settings.rules})
        if self.records_every_test and self.entries:
            results.missing_records = sorted(n for n in self.outcomes if n not in self.entries)
        if self.settings.stress:
            # which tests stress mode stressed, and why it left the others
            results.session_notes.extend(self.stress_ledger.lines(settings.stress_scope))
        request = None
        # Ctrl-C: the reports say so, and a baseline update is not even computed
        keep_baseline = self.interrupted and settings.baseline_update
        if settings.baseline is not None and not keep_baseline:
            assert settings.baseline_path is not None and settings.baseline_tolerance is not None
            request = run.BaselineRequest(
                settings.baseline_path, settings.baseline, settings.baseline_tolerance,
                update=settings.baseline_update, prune=settings.baseline_prune,
                selected=self.selected)
        # baseline verdict and the run's notes: the code `dbguard report` finishes shards with
        self._new_baseline = run.conclude(results, request)
        if self.interrupted:
            results.interrupted = True
            results.notes.insert(0, INTERRUPTED_NOTE)
            if keep_baseline:
                results.notes.append(BASELINE_KEPT_NOTE)
        self._results = results
        return results

    def write_outputs(self) -> None:
        """Every requested report, each on its own, then the updated baseline (only when every
        report was written); a failed write is one sentence in report_errors."""
        with session_objects_frozen():
            self._write_outputs()

    def _write_outputs(self) -> None:
        from .reporting import write_one, write_requested

        results = self.results()
        self.report_errors.extend(write_requested(self.settings, results))
        if self._new_baseline is None:  # no update asked for, or an interrupted run
            return
        from . import baseline as baseline_file

        path, new_baseline = self.settings.baseline_path, self._new_baseline
        assert path is not None
        if self.report_errors:
            error: str | None = (f"dbguard: the baseline {path!r} was not updated because a "
                                 f"report could not be written; fix the report path and run "
                                 f"again.")
        else:
            error = write_one("baseline", path, lambda: baseline_file.write(path, new_baseline))
        if error:
            self.report_errors.append(error)
            # the summary must not claim an update that did not happen
            results.notes[:] = [n for n in results.notes
                                if not n.startswith(f"baseline {path} updated")]


@contextmanager
def session_objects_frozen() -> Iterator[None]:
    """The session's objects kept out of the cyclic garbage collector's walks while the
    end-of-run reports are built.

    Building them allocates tens of thousands of short-lived dicts and lists, enough to set
    off a full collection, which walks every object the session holds (Django's, pytest's,
    each test's entry) and frees nothing: on the 1,600-test benchmark that one collection
    took 60 ms of the 150 ms the three report files cost. Frozen (gc.freeze), those objects
    are skipped, and the collections the writers set off walk only what the writers made;
    unfrozen afterwards, they are collected as before. Left alone when something in the
    process froze objects already, since unfreezing would undo that: Python 3.12 freezes a few
    hundred of its own at start-up, so there the reports are written without it.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
