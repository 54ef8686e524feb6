"""The session-wide hub that taps feed, and the per-test recorder that builds TestRecords."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from operator import itemgetter
from typing import Any, Protocol

from ..events import (
    NO_SITE,
    PHASES,
    ROW_CONN,
    ROW_DURATION,
    ROW_EXTRA,
    ROW_SHAPE,
    ROW_SITE,
    CallSite,
    Catalog,
    ConnectionEvent,
    FingerprintStats,
    PhaseRecord,
    QueryRow,
    TestRecord,
)
from .callsite import FrameClassifier
from .fingerprint import Fingerprinter
from .ledger import ConnectionLedger

# How many example SQL texts one fingerprint keeps per phase: counts are kept for every query.
EXAMPLES_PER_FINGERPRINT = 3
# Where the setup of session/module/class-scoped fixtures goes: shared, never charged to one test.
SHARED_FIXTURES = "shared-fixtures"


class Probe(Protocol):
    """Something besides the query taps that observes a test (see Hub.probes).

    Probes put plain data into `recorder.facts[name]`; rules read it from `TestRecord.facts`.
    """

    def start_test(self, recorder: TestRecorder) -> None: ...

    def end_phase(self, recorder: TestRecorder, phase: str) -> None: ...


# What the tap appends for each query of a session/module-scoped fixture: the session keeps
# only how many there were, so the query is neither fingerprinted nor placed.
SHARED_ROW: QueryRow = (0, NO_SITE, 0, 0, 0, 0, 0.0, None)
NO_WALK: tuple[Any, ...] = (None, -1, None, None, ())

class Hub:
    """Session-wide recording state. Taps append rows to `rows`; None means "not recording"."""

    def __init__(self, rootdir: str | None = None, show_params: bool = False) -> None:
        self.catalog = Catalog()
        self.classifier = FrameClassifier(self.catalog, rootdir)
        self.fingerprinter = Fingerprinter(self.catalog)
        self.show_params = show_params
        self.rows: list[QueryRow] | None = None
        # set up and torn down by the harness (pytest's setup and teardown phases): the taps
        # give its transaction control no call site
        self.harness_phase = False
        # The taps' walk outward from the first frame of Django's test harness (flush, loaddata,
        # the test transaction) it met, kept while that frame runs: the harness runs many
        # queries from one live frame at one instruction (flush's DELETEs, its post_migrate
        # handlers), and every frame further out is the same for them. One tuple, replaced
        # whole, so that taps on other threads read a consistent one: (frame, instruction
        # offset, user frame, fallback frame, marked frames further out)
        self.harness_walk: tuple[Any, ...] = NO_WALK
        self.unit = 0
        self._unit_seq = 0
        self.unit_labels: dict[int, str] = {}
        # the test body's units while the call phase runs (recording.bodysteps.BodySteps)
        self.body: Any = None
        # under stress (recording.threadrounds.ThreadRounds): requests open units per thread
        self.thread_units: Any = None
        self.recorder: TestRecorder | None = None
        self.shared_rows: list[QueryRow] = []
        self.shared_query_count = 0
        self.probes: list[Probe] = []
        # set before taps are installed (taps read them once): collect SQL+parameter digests
        # for the `duplicate` rule; walk past call sites for rendering templates
        self.collect_param_keys = False
        self.watch_templates = False
        self.explain_capture: Any = None  # ExplainProbe.capture with --dbguard-explain
        # called with each Django connection the taps see opening (query timeouts use it)
        self.connection_hooks: list[Any] = []
        # called with (raw connection, label) for each raw psycopg connection or pool checkout
        # the code under test takes while a test records (the lock sampler uses them)
        self.raw_connection_hooks: list[Any] = []
        # called with no argument when a test hands work to another thread (sync_to_async)
        self.handoff_hooks: list[Any] = []
        self._lock = threading.Lock()

    # -- units of work -------------------------------------------------------------------
    def begin_unit(self, label: str) -> None:
        with self._lock:
            self._unit_seq += 1
            unit = self._unit_seq
            self.unit_labels[unit] = label
        per_thread = self.thread_units
        if per_thread is not None:
            # requests of several stressed threads at once: each is its thread's unit, and
            # the session-wide unit (which every thread's tap reads first) stays unset
            per_thread.begin_request(unit)
            return
        self.unit = unit

    def end_unit(self) -> None:
        per_thread = self.thread_units
        if per_thread is not None:
            per_thread.end_request()
            return
        self.unit = 0

    def new_unit(self) -> int:
        """A fresh unit number without a label: one call of the test body."""
        with self._lock:
            self._unit_seq += 1
            return self._unit_seq

    # -- tests ---------------------------------------------------------------------------
    def start_test(self, nodeid: str) -> TestRecorder:
        recorder = self.recorder = TestRecorder(self, nodeid)
        self.unit_labels = {}
        self.unit = 0
        for probe in self.probes:
            probe.start_test(recorder)
        return recorder

    def finish_test(self) -> None:
        self.recorder = None
        self.rows = None
        self.harness_walk = NO_WALK  # the frames it holds are this test's

    @contextmanager
    def shared_fixture(self) -> Iterator[None]:
        """Charge queries of a higher-scoped fixture to the session, not to the current test."""
        previous = self.enter_shared()
        try:
            yield
        finally:
            self.leave_shared(previous)

    def enter_shared(self) -> list[QueryRow] | None:
        """shared_fixture() without a generator, for the fixture wrappers: returns what
        leave_shared() takes back."""
        previous = self.rows
        if previous is not None:
            self.rows = self.shared_rows
        return previous

    def leave_shared(self, previous: list[QueryRow] | None) -> None:
        if previous is None:
            return
        self.shared_query_count += len(self.shared_rows)
        self.shared_rows.clear()
        self.rows = previous

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The plugin's own SQL runs here: it must never reach a test's record."""
        previous = self.rows
        self.rows = None
        try:
            yield
        finally:
            self.rows = previous


class TestRecorder:
    """Collects one test's rows per phase and the connections it opened."""

    __test__ = False

    def __init__(self, hub: Hub, nodeid: str) -> None:
        self.hub = hub
        self.nodeid = nodeid
        self.phase_rows: dict[str, list[QueryRow]] = {}
        self.phase_records: dict[str, PhaseRecord] = {}
        self.current_phase: str | None = None
        self.connections = ConnectionLedger()
        self.peak_connections = 0
        self.vendors: set[str] = set()
        self.facts: dict[str, Any] = {}
        # phases that got rows after their record was built (see charged_to)
        self._rebuild: set[str] = set()
        # the test thread's initialised Django connections, read once per phase boundary
        self._wrappers: list[Any] | None = None

    def test_thread_wrappers(self) -> list[Any]:
        """The test thread's initialised Django connection objects at this phase boundary:
        read once for every probe (each read goes through asgiref's thread-local storage)."""
        wrappers = self._wrappers
        if wrappers is None:
            wrappers = self._wrappers = list(
                _django_connections().all(initialized_only=True))
        return wrappers

    def start_phase(self, phase: str) -> None:
        # teardown may hold rows already: a unittest tearDown that ran inside the call phase
        rows: list[QueryRow] = self.phase_rows.setdefault(phase, [])
        self.current_phase = phase
        self.hub.harness_phase = phase != "call"
        self.hub.rows = rows

    @contextmanager
    def charged_to(self, phase: str) -> Iterator[None]:
        """Record into `phase` while the block runs, although pytest is in another phase.

        unittest runs setUp and tearDown inside pytest's call phase; they are the test's
        set-up and teardown all the same, and never the body's queries.
        """
        previous, body = self.hub.rows, self.hub.body
        if previous is None:
            yield
            return
        self.hub.rows = self.phase_rows.setdefault(phase, [])
        self.hub.body = None
        try:
            yield
        finally:
            self.hub.rows, self.hub.body = previous, body
            self._rebuild.add(phase)

    def stop_phase(self) -> PhaseRecord:
        phase = self.current_phase or "call"
        hub = self.hub
        hub.rows = None
        hub.harness_phase = False
        self.current_phase = None
        self._wrappers = None
        for probe in hub.probes:
            probe.end_phase(self, phase)
        self._wrappers = None
        labels = hub.unit_labels
        record = build_phase(phase, self.phase_rows.get(phase, _NO_ROWS),
                             dict(labels) if labels else {}, hub.catalog,
                             with_examples=hub.show_params)
        self.phase_records[phase] = record
        if self._rebuild:  # a unittest setUp/tearDown charged to another phase
            for other in self._rebuild - {phase}:
                if other in self.phase_records:
                    self.phase_records[other] = build_phase(
                        other, self.phase_rows[other], dict(hub.unit_labels),
                        hub.catalog, with_examples=hub.show_params)
            self._rebuild.clear()
        return record

    def live_rows(self) -> list[QueryRow]:
        """Rows of the phase being recorded right now (for the `dbguard` fixture)."""
        if self.current_phase is None:
            return []
        return self.phase_rows.get(self.current_phase, [])

    def record(self) -> TestRecord:
        conns = self.hub.catalog.conns
        used: set[int] = set()
        for rows in self.phase_rows.values():
            if rows:
                used.update(map(_CONN_OF, rows))
        vendors = self.vendors.union([conns[i].vendor for i in used])
        connections = tuple(
            ConnectionEvent(
                alias=c.alias, vendor=c.vendor, thread=c.thread, opened_in_phase=c.phase,
                backend_pid=c.pid, call_site=c.site, closed=c.is_closed(),
            )
            for c in self.connections
        ) if self.connections else ()
        records = self.phase_records
        return TestRecord(
            self.nodeid,
            records.copy() if tuple(records) == PHASES
            else {p: records[p] for p in PHASES if p in records},
            connections,
            self.peak_connections,
            tuple(sorted(vendors)) if len(vendors) > 1 else tuple(vendors),
            dict(self.facts),
        )


def _django_connections() -> Any:
    """django.db.connections, imported on first use (a function-level import costs a call
    into the import system every time it runs)."""
    global _CONNECTIONS
    if _CONNECTIONS is None:
        from django.db import connections

        _CONNECTIONS = connections
    return _CONNECTIONS


_CONNECTIONS: Any = None
_NO_ROWS: list[QueryRow] = []
SMALL_PHASE = 24  # rows up to which build_phase counts in a Python loop
_GROUP_KEY = itemgetter(ROW_SHAPE, ROW_SITE, ROW_CONN)
_CONN_OF = itemgetter(ROW_CONN)
_SHAPE_AND_DURATION = itemgetter(ROW_SHAPE, ROW_DURATION)
_DURATION_OF = itemgetter(ROW_DURATION)


def build_phase(phase: str, rows: list[QueryRow], units: dict[int, str],
                catalog: Catalog, with_examples: bool = False) -> PhaseRecord:
    """Aggregate one phase's rows: counts by alias now, stats by fingerprint on first read."""
    if not rows:
        # most setup and teardown phases of a fast suite: nothing to aggregate
        return PhaseRecord(phase, 0, 0, (), 0.0, (), (), units, catalog)
    shapes, conns = catalog.shapes, catalog.conns
    groups: dict[tuple[int, int, int], int]
    if len(rows) > SMALL_PHASE:
        # counting runs in C (Counter over itemgetter); Python only walks the distinct groups
        groups = Counter(map(_GROUP_KEY, rows))
        duration = sum(map(_DURATION_OF, rows))
    else:
        # most phases hold a handful of rows: one pass in Python beats Counter's set-up
        groups = {}
        get = groups.get
        duration = 0.0
        for row in rows:
            key = (row[ROW_SHAPE], row[ROW_SITE], row[ROW_CONN])
            groups[key] = get(key, 0) + 1
            duration += row[ROW_DURATION]
    by_alias: dict[str, int] = {}
    tx = 0
    for (shape_i, _, conn_i), n in groups.items():
        if shapes[shape_i].is_transaction_control:
            tx += n
        else:
            alias = conns[conn_i].alias
            by_alias[alias] = by_alias.get(alias, 0) + n
    frozen = tuple(rows)
    return PhaseRecord(
        phase, sum(by_alias.values()), tx,
        tuple(sorted(by_alias.items())) if len(by_alias) > 1 else tuple(by_alias.items()),
        duration * 1000.0,
        partial(fingerprint_stats, frozen, groups, catalog, with_examples),
        frozen, units, catalog,
    )


def fingerprint_stats(rows: tuple[QueryRow, ...], groups: dict[tuple[int, int, int], int],
                      catalog: Catalog, with_examples: bool) -> tuple[FingerprintStats, ...]:
    """One phase's queries by fingerprint: counts, time, aliases, call sites, examples."""
    shapes, sites, conns = catalog.shapes, catalog.sites, catalog.conns
    spent: dict[int, float] = {}
    for shape_i, duration in map(_SHAPE_AND_DURATION, rows):
        spent[shape_i] = spent.get(shape_i, 0.0) + duration
    # plain dicts per group (a Counter per group costs more than the counting it does)
    per_shape: dict[int, list[Any]] = {}
    for (shape_i, site_i, conn_i), n in groups.items():
        slot = per_shape.get(shape_i)
        if slot is None:
            slot = per_shape[shape_i] = [shapes[shape_i], 0, {}, {}, []]
        alias = conns[conn_i].alias
        slot[1] += n
        slot[2][alias] = slot[2].get(alias, 0) + n
        slot[3][site_i] = slot[3].get(site_i, 0) + n
    for row in rows if with_examples else ():
        extra = row[ROW_EXTRA]
        if extra is not None and "sql" in extra:
            examples = per_shape[row[ROW_SHAPE]][4]
            example = f"{extra['sql']}  -- params {extra.get('params')}"
            if len(examples) < EXAMPLES_PER_FINGERPRINT and example not in examples:
                examples.append(example)
    stats = []
    for shape_i, (shape, count, aliases, site_counts, examples) in per_shape.items():
        if len(site_counts) == 1:
            [(site_i, n)] = site_counts.items()
            resolved = [(sites[site_i] if site_i != NO_SITE else None, n)]
        else:
            resolved = sorted(((sites[i] if i != NO_SITE else None, n)
                               for i, n in site_counts.items()), key=_site_order)
        stats.append(FingerprintStats(
            fingerprint_id=shape.fingerprint_id,
            fingerprint=shape.fingerprint,
            count=count,
            total_ms=spent[shape_i] * 1000.0,
            aliases=tuple(sorted(aliases.items())) if len(aliases) > 1
            else tuple(aliases.items()),
            call_sites=tuple(resolved),
            examples=tuple(examples),
            is_transaction_control=shape.is_transaction_control,
        ))
    if len(stats) > 1:
        stats.sort(key=_stats_order)
    return tuple(stats)


def _stats_order(stats: FingerprintStats) -> tuple[int, str]:
    return (-stats.count, stats.fingerprint)


def _site_order(item: tuple[CallSite | None, int]) -> tuple[int, str, int]:
    site, count = item
    return (-count, site.path if site else "~", site.line if site else 0)
