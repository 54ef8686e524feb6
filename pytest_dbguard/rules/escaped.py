"""escaped-write: a write another connection committed while the test's own changes roll back."""

from __future__ import annotations

from collections.abc import Iterable
from operator import itemgetter

from ..events import (
    FLAG_ERROR,
    FLAG_IN_ATOMIC,
    NO_SITE,
    ROW_CONN,
    ROW_FLAGS,
    ROW_SHAPE,
    ROW_SITE,
    Finding,
    QueryRow,
    TestRecord,
)
from ..facts import COMMITS, PSYCOPG, CommitFacts, PsycopgFacts
from ..text import short_sql
from .registry import PROBE_COMMITS, PROBE_PSYCOPG, SUSPENDED, TestContext, rule

HINT_ESCAPED = ("the test's own changes are rolled back at its end, but a write another "
                "connection commits is not: run the test with "
                "`@pytest.mark.django_db(transaction=True)` (or make it a "
                "TransactionTestCase), whose flush removes every connection's rows, or keep "
                "the write on the test's connection (call the code in the test thread rather "
                "than in another thread or through sync_to_async)")
HINT_ESCAPED_RAW = HINT_ESCAPED + (
    ". A raw psycopg connection or psycopg-pool checkout commits apart from the test whatever "
    "the thread: run such code through Django's connection (django.db.connection.cursor()) "
    "in tests, or delete its rows in the test's teardown")

# Writes judged: those of the test's set-up and body. Teardown writes on other connections are
# usually the clean-up of such leaks.
_JUDGED = ("setup", "call")
_HOW = {False: "committed at once (autocommit)", True: "committed when its atomic block ended"}
_CONN_OF = itemgetter(ROW_CONN)


@rule("escaped-write", "fail", "a write committed on another connection escapes the test's "
      "rollback", probes=frozenset({PROBE_COMMITS, PROBE_PSYCOPG}), stress=SUSPENDED)
def check_escaped_write(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    facts: CommitFacts | None = record.facts.get(COMMITS)
    if facts is None or not facts.rolled_back:
        return ()
    own = frozenset(facts.test_conns)
    raw: PsycopgFacts | None = record.facts.get(PSYCOPG)
    if (raw is None or not raw.writes) and _only_own(record, own):
        # every query ran on the test's own connections and no raw connection wrote: the
        # common case, decided without walking the rows in Python
        return ()
    rolled_back = frozenset(facts.rolled_back)
    # per other connection: its writes waiting for a commit, and its open savepoints
    pending: dict[int, list[tuple[str, QueryRow, bool]]] = {}
    marks: dict[int, list[int]] = {}
    escaped: dict[tuple[int, int, int, bool], int] = {}
    catalog = None

    def settle(conn_i: int, kind: str) -> None:
        for _, row, in_atomic in pending.pop(conn_i, ()):
            if kind == "commit":
                key = (row[ROW_CONN], row[ROW_SHAPE], row[ROW_SITE], in_atomic)
                escaped[key] = escaped.get(key, 0) + 1
        marks.pop(conn_i, None)

    for phase_name in ("setup", "call", "teardown"):
        phase = record.phase(phase_name)
        events = [e for e in facts.events if e[0] == phase_name]
        if not phase.rows and not events:
            continue
        catalog = phase.catalog
        shapes, conns = catalog.shapes, catalog.conns
        event_i = 0
        for position, row in enumerate(phase.rows):
            while event_i < len(events) and events[event_i][1] <= position:
                settle(events[event_i][2], events[event_i][3])
                event_i += 1
            conn_i = row[ROW_CONN]
            if conn_i in own or conns[conn_i].alias not in rolled_back:
                continue
            shape = shapes[row[ROW_SHAPE]]
            if shape.is_transaction_control:
                _savepoint(shape.verb, pending.setdefault(conn_i, []),
                           marks.setdefault(conn_i, []))
                continue
            flags = row[ROW_FLAGS]
            # a locking read (SELECT ... FOR UPDATE) takes row locks and changes no row
            if (not shape.is_write or shape.verb == "SELECT" or flags & FLAG_ERROR
                    or phase_name not in _JUDGED):
                continue
            if flags & FLAG_IN_ATOMIC:
                pending.setdefault(conn_i, []).append((phase_name, row, True))
            else:
                key = (conn_i, row[ROW_SHAPE], row[ROW_SITE], False)
                escaped[key] = escaped.get(key, 0) + 1
        for event in events[event_i:]:
            settle(event[2], event[3])
    lines, total = [], sum(escaped.values())
    if catalog is not None:
        for (conn_i, shape_i, site_i, in_atomic), n in sorted(escaped.items()):
            conn = catalog.conns[conn_i]
            lines.append(f"{n}× {short_sql(catalog.shapes[shape_i].fingerprint)} at "
                         f"{_site(catalog.sites, site_i)} on Django connection '{conn.alias}' "
                         f"of thread {conn.thread}, {_HOW[in_atomic]}")
    raw_lines, raw_total = _raw_writes(record, facts)
    if not lines and not raw_lines:
        return ()
    lines += raw_lines
    total += raw_total
    return (Finding(
        rule="escaped-write",
        nodeid=record.nodeid,
        phase="call",
        message=f"{total} {'write was' if total == 1 else 'writes were'} committed on another "
                f"connection while this test's changes are rolled back at its end: the rows "
                f"stay in the database and leak into later tests",
        hint=HINT_ESCAPED_RAW if raw_lines else HINT_ESCAPED,
        evidence={"lines": lines, "count": total},
    ),)


def _only_own(record: TestRecord, own: frozenset[int]) -> bool:
    """Whether every query of the test ran on one of the test thread's own connections."""
    for phase in record.phases.values():
        rows = phase.rows
        if rows and not own.issuperset(map(_CONN_OF, rows)):
            return False
    return True


def _savepoint(verb: str, pending: list[tuple[str, QueryRow, bool]], marks: list[int]) -> None:
    """Follow an inner atomic block: ROLLBACK TO SAVEPOINT undoes the writes since SAVEPOINT."""
    if verb == "SAVEPOINT":
        marks.append(len(pending))
    elif verb == "RELEASE" and marks:
        marks.pop()
    elif verb == "ROLLBACK" and marks:
        del pending[marks.pop():]


def _site(sites: list, site_i: int) -> str:
    return str(sites[site_i]) if site_i != NO_SITE else "an unknown call site"


def _raw_writes(record: TestRecord, facts: CommitFacts) -> tuple[list[str], int]:
    """Writes raw psycopg connections committed to a database whose test changes roll back."""
    raw: PsycopgFacts | None = record.facts.get(PSYCOPG)
    if raw is None:
        return [], 0
    databases = set(facts.rolled_back_databases)
    lines, total = [], 0
    for write in sorted(raw.writes, key=lambda w: (_JUDGED.index(w.phase)
                                                   if w.phase in _JUDGED else 9, w.site or "",
                                                   w.sql, w.thread, w.how)):
        if write.phase not in _JUDGED or write.database not in databases:
            continue
        lines.append(f"{write.count}× {short_sql(write.sql)} at "
                     f"{write.site or 'an unknown call site'} on {write.connection} of thread "
                     f"{write.thread}, {write.how}")
        total += write.count
    return lines, total
