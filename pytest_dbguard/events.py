"""Frozen records that flow from recording to rules to reports, with their dict forms."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

PHASES = ("setup", "call", "teardown")



@dataclass(frozen=True, slots=True)
class CallSite:
    """Where user code issued a query: the first frame outside Django, pytest and the plugin."""

    path: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "function": self.function}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallSite:
        return cls(path=data["path"], line=int(data["line"]), function=data.get("function", ""))


@dataclass(frozen=True, slots=True)
class SqlShape:
    """The normalised form of one SQL text: one shape, one fingerprint."""

    fingerprint: str
    fingerprint_id: str
    is_transaction_control: bool
    is_write: bool
    verb: str


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """The connection a query ran on, as recorded: alias, vendor and the thread that owns it."""

    alias: str
    vendor: str
    thread: str


@dataclass(frozen=True, slots=True)
class Relation:
    """A model relation whose lazy access ran a query: `Book.author`, `Author.books`, ..."""

    kind: str  # forward | reverse-one | manager | generic-fk | deferred
    model: str  # class whose attribute was read ("Book")
    field: str  # the attribute ("author", "books", "tags")
    target: str  # model the query loads ("Author"); the field's own model for "deferred"
    source_table: str  # db table of `model`: rows loading it tell how the instances were loaded
    # several relations of `model` lead to `target` (two M2M fields to one model): the field
    # names with their join tables; the rule picks the one whose table is in the SQL
    candidates: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.model}.{self.field}"


@dataclass(frozen=True, slots=True)
class QueryContext:
    """What the ORM and template engine were doing around a query, beyond its call site."""

    relation: Relation | None = None
    # how the query was caused on a related manager: fetch | count | exists
    operation: str = "fetch"
    # the relation was prefetched, but the access bypassed the prefetch cache (a filter on it)
    bypassed_prefetch: bool = False
    template: str | None = None  # template name while it was rendering ("<string>" if unnamed)
    # how the template reached the database: variable | queryset | tag | context-processor
    template_via: str | None = None
    template_function: str | None = None  # the tag / filter / context processor function
    # a Django operation whose queries are never an N+1: "delete" (cascade collector),
    # "prefetch" (prefetch_related), "refresh" (refresh_from_db)
    suppressed: str | None = None


NO_CONTEXT = QueryContext()


class Catalog:
    """Append-only tables that rows point into by index.

    A recorded query is a tuple of ints and a float, never of objects: such tuples are untracked
    by the garbage collector, which keeps per-query cost flat however long a test runs.
    """

    __slots__ = ("shapes", "sites", "conns", "contexts", "lock")

    def __init__(self) -> None:
        # Taps on several threads add entries; an index must never be handed out twice, and a
        # key (call site, SQL text) must map to one index. First sightings only: the hot path
        # reads without the lock.
        self.lock = threading.Lock()
        self.shapes: list[SqlShape] = []
        self.sites: list[CallSite] = []
        self.conns: list[ConnInfo] = []
        # index 0 is "no context": the value of ROW_CONTEXT for almost every query
        self.contexts: list[QueryContext] = [NO_CONTEXT]

    def add(self, table: list[Any], item: Any) -> int:
        """Append under the lock and return the new index (callers hold the lock already)."""
        table.append(item)
        return len(table) - 1


# The slots of a recorded query row. ROW_CONTEXT indexes Catalog.contexts (0: none).
ROW_SHAPE, ROW_SITE, ROW_CONTEXT, ROW_CONN, ROW_UNIT, ROW_FLAGS, ROW_DURATION, ROW_EXTRA = range(8)
ROW_LAZY = ROW_CONTEXT  # the slot's first name, kept for readers written against it
FLAG_IN_ATOMIC = 1
FLAG_IN_EVENT_LOOP = 2
FLAG_MANY = 4
FLAG_ERROR = 8
FLAG_FOREIGN_THREAD = 16
# Bits from PARAM_KEY_SHIFT up hold a 48-bit digest of the SQL text and its parameters, only
# while the `duplicate` rule is on: it rides in the flags int so rows stay flat tuples of
# numbers. Read flags with `&`, never `==`.
PARAM_KEY_SHIFT = 16
PARAM_KEY_MASK = (1 << 48) - 1
NO_SITE = -1


def param_key(flags: int) -> int:
    """The SQL+parameters digest of a row's flags; 0 when it was not collected."""
    return flags >> PARAM_KEY_SHIFT

# (shape_i, site_i, lazy_kind, conn_i, unit, flags, duration_s, extra dict or None)
QueryRow = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Query:
    """One executed statement as a test sees it (parameters only with --dbguard-show-params)."""

    sql: str
    fingerprint: str
    fingerprint_id: str
    alias: str
    phase: str
    duration_ms: float
    thread: str
    call_site: CallSite | None
    in_atomic: bool
    in_event_loop: bool
    unit: str
    is_transaction_control: bool
    many: bool
    error: str | None = None
    sqlstate: str | None = None
    lazy_relation: str | None = None
    params: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["call_site"] = str(self.call_site) if self.call_site else None
        return data


def row_to_query(row: QueryRow, phase: str, units: dict[int, str], catalog: Catalog) -> Query:
    shape_i, site_i, context_i, conn_i, unit, flags, duration, extra = row
    shape = catalog.shapes[shape_i]
    relation = catalog.contexts[context_i].relation
    conn = catalog.conns[conn_i]
    site = catalog.sites[site_i] if site_i != NO_SITE else None
    extra = extra or {}
    return Query(
        sql=extra.get("sql") or shape.fingerprint,
        fingerprint=shape.fingerprint,
        fingerprint_id=shape.fingerprint_id,
        alias=conn.alias,
        phase=phase,
        duration_ms=duration * 1000.0,
        thread=extra.get("thread") or conn.thread,
        call_site=site,
        in_atomic=bool(flags & FLAG_IN_ATOMIC),
        in_event_loop=bool(flags & FLAG_IN_EVENT_LOOP),
        unit=units.get(unit, "test"),
        is_transaction_control=shape.is_transaction_control,
        many=bool(flags & FLAG_MANY),
        error=extra.get("error"),
        sqlstate=extra.get("sqlstate"),
        lazy_relation=relation.label if relation is not None else None,
        params=extra.get("params"),
    )


@dataclass(frozen=True, slots=True)
class FingerprintStats:
    """All queries of one shape in one phase of one test, with counts and a few examples."""

    fingerprint_id: str
    fingerprint: str
    count: int
    total_ms: float
    aliases: tuple[tuple[str, int], ...]
    call_sites: tuple[tuple[CallSite | None, int], ...]
    examples: tuple[str, ...]
    is_transaction_control: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.fingerprint_id,
            "sql": self.fingerprint,
            "count": self.count,
            "total_ms": round(self.total_ms, 3),
            "aliases": dict(self.aliases),
            "call_sites": [
                {"site": str(site) if site else None, "count": count}
                for site, count in self.call_sites
            ],
            "examples": list(self.examples),
        }


@dataclass(frozen=True, slots=True)
class PhaseRecord:
    """What one phase (setup, call or teardown) of a test did to the database."""

    phase: str
    query_count: int
    transaction_control_count: int
    by_alias: tuple[tuple[str, int], ...]
    duration_ms: float
    # the stats by fingerprint, or a function that builds them on first read: most setup and
    # teardown phases are only ever counted, so their stats are never built
    lazy_fingerprints: tuple[FingerprintStats, ...] | Callable[[], tuple[FingerprintStats, ...]]
    rows: tuple[QueryRow, ...]
    units: dict[int, str] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=Catalog, repr=False, compare=False)

    @property
    def fingerprints(self) -> tuple[FingerprintStats, ...]:
        stats = self.lazy_fingerprints
        if callable(stats):
            stats = stats()
            object.__setattr__(self, "lazy_fingerprints", stats)
        return stats

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhaseRecord):
            return NotImplemented
        return (self.phase, self.query_count, self.transaction_control_count, self.by_alias,
                self.duration_ms, self.fingerprints, self.rows, self.units) == (
            other.phase, other.query_count, other.transaction_control_count, other.by_alias,
            other.duration_ms, other.fingerprints, other.rows, other.units)

    __hash__ = None  # type: ignore[assignment]

    def count(self, using: str | list[str] | tuple[str, ...] | None = None,
              count_tx: bool = False) -> int:
        """Queries of this phase on the given aliases, transaction control only if asked."""
        if using is None and not count_tx:
            return self.query_count
        aliases = alias_filter(using)
        shapes, conns = self.catalog.shapes, self.catalog.conns
        return sum(
            1 for row in self.rows
            if (aliases is None or conns[row[ROW_CONN]].alias in aliases)
            and (count_tx or not shapes[row[ROW_SHAPE]].is_transaction_control)
        )

    def queries(self) -> list[Query]:
        return [row_to_query(row, self.phase, self.units, self.catalog) for row in self.rows]

    def failed_queries(self) -> list[Query]:
        """Only the statements that raised: rules looking for errors need not build the rest."""
        return [row_to_query(row, self.phase, self.units, self.catalog) for row in self.rows
                if row[ROW_FLAGS] & FLAG_ERROR]


def alias_filter(using: str | list[str] | tuple[str, ...] | None) -> frozenset[str] | None:
    if using is None:
        return None
    if isinstance(using, str):
        return frozenset((using,))
    return frozenset(using)


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A database connection seen during a test."""

    alias: str
    vendor: str
    thread: str
    opened_in_phase: str
    backend_pid: int | None
    call_site: CallSite | None
    closed: bool

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["call_site"] = str(self.call_site) if self.call_site else None
        return data


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem a rule found in one test."""

    rule: str
    nodeid: str
    phase: str
    message: str
    action: str = "fail"
    evidence: dict[str, Any] = field(default_factory=dict)
    hint: str = ""
    allowed_reason: str | None = None

    def render(self) -> str:
        lines = [f"[dbguard:{self.rule}] {self.message}"]
        detail = self.evidence.get("lines")
        if detail:
            lines.extend(f"    {line}" for line in detail)
        if self.hint:
            lines.append(f"    hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "action": self.action,
            "phase": self.phase,
            "message": self.message,
            "hint": self.hint,
            "evidence": self.evidence,
            "allowed": self.allowed_reason,
        }


@dataclass(frozen=True, slots=True)
class TestRecord:
    """Everything recorded for one test; the input of every rule."""

    nodeid: str
    phases: dict[str, PhaseRecord]
    connections: tuple[ConnectionEvent, ...] = ()
    peak_connections: int = 0
    vendors: tuple[str, ...] = ()
    # what probes other than the query taps observed (transaction state, raw psycopg
    # connections, server census...), keyed by probe name; plain data only
    facts: dict[str, Any] = field(default_factory=dict)

    __test__ = False  # not a pytest test class despite the name

    def phase(self, name: str) -> PhaseRecord:
        return self.phases.get(name) or EMPTY_PHASES[name]

    @property
    def total_queries(self) -> int:
        return sum(p.query_count for p in self.phases.values())


EMPTY_PHASES = {name: PhaseRecord(name, 0, 0, (), 0.0, (), ()) for name in PHASES}
