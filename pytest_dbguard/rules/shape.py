"""Per-query rules: slow, timeout, missing index, template, replica write, pgbouncer-unsafe."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .. import defaults
from ..backends import Backend, for_vendor
from ..events import (
    FLAG_ERROR,
    NO_SITE,
    ROW_CONN,
    ROW_CONTEXT,
    ROW_DURATION,
    ROW_EXTRA,
    ROW_FLAGS,
    ROW_SHAPE,
    ROW_SITE,
    ROW_UNIT,
    Finding,
    TestRecord,
)
from ..facts import LOCK_WAITS, PSYCOPG, QUERY_TIMEOUT, PsycopgFacts, QueryTimeoutFacts
from ..text import short_sql
from .known import site_key
from .lockwait import DEFAULT_LOCK_WAIT_MS
from .nplusone import site_text, unit_label
from .registry import (
    PROBE_EXPLAIN,
    PROBE_PSYCOPG,
    PROBE_TEMPLATES,
    THREAD_ROUNDS,
    RuleOption,
    TestContext,
    rule,
)

DEFAULT_SLOW_MS = defaults.SLOW_MS


@dataclass(frozen=True)
class QueryTimeout:
    """A parsed @pytest.mark.query_timeout(ms, *, using=None)."""

    ms: int
    using: tuple[str, ...] | None = None
    source: str = "query_timeout marker"


@rule("slow-query", "warn", "one query took longer than --dbguard-slow-ms",
      options=(RuleOption("slow_ms", DEFAULT_SLOW_MS, "--dbguard-slow-ms"),), stress=THREAD_ROUNDS,
      stress_every_run=True, needs_call_queries=True)
def check_slow_query(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    phase = record.phase("call")
    limit_ms = float(context.options.get("slow_ms", DEFAULT_SLOW_MS))
    lock_wait_ms = float(context.options.get("lock_wait_ms", DEFAULT_LOCK_WAIT_MS))
    catalog = phase.catalog
    # time a statement spent queued on another connection's lock is lock-wait's finding, not
    # slowness of the statement: fingerprint -> longest wait the lock sampler saw (PostgreSQL)
    waited: dict[str, float] = {}
    for wait in record.facts.get(LOCK_WAITS) or ():
        waited[wait.sql] = max(waited.get(wait.sql, 0.0), wait.wait_ms)
    slowest: dict[tuple[int, int], tuple[float, int, int]] = {}  # (shape, site) -> max, n, conn
    for row in phase.rows:
        ms = row[ROW_DURATION] * 1000.0
        shape = catalog.shapes[row[ROW_SHAPE]]
        if ms < limit_ms or shape.is_transaction_control:
            continue
        # a wait lock-wait reports is its finding however long the rest took (the sampler sees
        # a wait up to a polling interval late, later on a loaded machine); a shorter one is
        # taken off the statement's time
        wait = waited.get(shape.fingerprint, 0.0) if waited else 0.0
        if wait and (wait >= lock_wait_ms or ms - wait < limit_ms):
            continue
        key = (row[ROW_SHAPE], row[ROW_SITE])
        worst, n, conn = slowest.get(key, (0.0, 0, row[ROW_CONN]))
        slowest[key] = (max(worst, ms), n + 1, conn)
    findings = []
    for (shape_i, site_i), (worst, n, conn_i) in slowest.items():
        shape = catalog.shapes[shape_i]
        times = f"{n}× up to {worst:.0f} ms" if n > 1 else f"{worst:.0f} ms"
        findings.append(Finding(
            rule="slow-query",
            nodeid=record.nodeid,
            phase="call",
            message=(f"slow query: {short_sql(shape.fingerprint)} took {times} (limit "
                     f"{limit_ms:g} ms) at {site_text(catalog, site_i)}; check its plan with "
                     "EXPLAIN ANALYZE and add an index or fetch less"),
            hint="a query this slow in a test database with a few rows gets slower with "
                 "production data; --dbguard-explain shows sequential scans on PostgreSQL",
            evidence={"ms": round(worst, 1), "count": n, "limit_ms": limit_ms,
                      "fingerprint": shape.fingerprint, "site": site_text(catalog, site_i),
                      "site_key": site_key(catalog, site_i),
                      "fingerprint_id": shape.fingerprint_id,
                      "lines": [f"alias {catalog.conns[conn_i].alias}"]},
        ))
    findings.sort(key=lambda f: -f.evidence["ms"])
    return findings


@rule("query-timeout", "fail", "a query was cancelled by query_timeout",
      marker="query_timeout")
def check_query_timeout(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    settings: QueryTimeoutFacts | None = record.facts.get(QUERY_TIMEOUT)
    if settings is None:
        return []
    phase = record.phase("call")
    catalog = phase.catalog
    findings = []
    for row in phase.rows:
        if not row[ROW_FLAGS] & FLAG_ERROR:
            continue
        extra = row[ROW_EXTRA] or {}
        conn = catalog.conns[row[ROW_CONN]]
        error = extra.get("error") or ""
        if not for_vendor(conn.vendor).cancelled_by_timeout(error, extra.get("sqlstate")):
            continue
        shape = catalog.shapes[row[ROW_SHAPE]]
        site = site_text(catalog, row[ROW_SITE])
        waited = "a lock" if "lock timeout" in error else "its result"
        findings.append(Finding(
            rule="query-timeout",
            nodeid=record.nodeid,
            phase="call",
            message=(f"query cancelled after {settings.ms} ms (query_timeout) waiting for "
                     f"{waited}: {short_sql(shape.fingerprint)} at {site} (alias "
                     f"{conn.alias}); make it faster or raise the timeout"),
            hint="an index, a narrower filter, or shorter transactions holding the lock keep "
                 "it under the timeout; query_timeout(ms) on the test sets the limit",
            evidence={"ms": settings.ms, "fingerprint": shape.fingerprint, "site": site,
                      "alias": conn.alias, "error": error,
                      "lines": [f"in {unit_label(phase, row[ROW_UNIT])}: {error}"]},
        ))
    return findings


@rule("missing-index", "warn", "PostgreSQL plans a sequential scan with a filter",
      probes=frozenset({PROBE_EXPLAIN}), switch="explain",
      options=(RuleOption("explain", False, "--dbguard-explain"),))
def check_missing_index(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    scans = record.facts.get("explain") or []
    catalog = record.phase("call").catalog
    findings = []
    seen: set[tuple[str, str]] = set()
    for scan in scans:
        key = (scan["fingerprint_id"], scan["table"])
        if key in seen:
            continue
        seen.add(key)
        columns = scan["columns"]
        site = site_text(catalog, scan["site"] if scan["site"] is not None else NO_SITE)
        if columns:
            fields = ", ".join(f'"{c}"' for c in columns)
            fix = f"add models.Index(fields=[{fields}]) to the model of {scan['table']}"
        else:
            fix = f"add an index matching the filter to {scan['table']}"
        findings.append(Finding(
            rule="missing-index",
            nodeid=record.nodeid,
            phase="call",
            message=(f'missing index: sequential scan on "{scan["table"]}" filtering '
                     f"{scan['filter']} for {short_sql(scan['fingerprint'])} at {site}; "
                     f"{fix}"),
            hint="PostgreSQL planned a sequential scan even with enable_seqscan = off, so no "
                 "index can serve this filter; on a large table every such query reads it all",
            evidence={"table": scan["table"], "filter": scan["filter"], "columns": columns,
                      "fingerprint": scan["fingerprint"], "site": site, "alias": scan["alias"],
                      "lines": [f"alias {scan['alias']}"]},
        ))
    return findings


_VIA_TEXT = {
    "variable": "a template variable loaded a relation",
    "queryset": "the template evaluated a queryset",
    "tag": "template tag or filter {function}() queried",
    "context-processor": "context processor {function}() queried",
}


@rule("template-query", "off", "a query ran while a template was rendering",
      probes=frozenset({PROBE_TEMPLATES}), needs_call_queries=True)
def check_template_query(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    phase = record.phase("call")
    catalog = phase.catalog
    contexts = catalog.contexts
    groups: dict[tuple[str, str, str | None, int, int, int], int] = {}
    for row in phase.rows:
        context_i = row[ROW_CONTEXT]
        if not context_i:
            continue
        query_context = contexts[context_i]
        if query_context.template is None:
            continue
        key = (query_context.template, query_context.template_via or "queryset",
               query_context.template_function, row[ROW_SHAPE], row[ROW_SITE], row[ROW_UNIT])
        groups[key] = groups.get(key, 0) + 1
    findings = []
    for (template, via, function, shape_i, site_i, unit), count in groups.items():
        shape = catalog.shapes[shape_i]
        how = _VIA_TEXT[via].format(function=function or "?")
        fix = {
            "variable": "load the relation in the view (select_related / prefetch_related)",
            "queryset": "evaluate the queryset in the view and pass a list",
            "tag": "pass the data in from the view instead of querying in the tag",
            "context-processor": "make the context processor lazy or cache its result",
        }[via]
        findings.append(Finding(
            rule="template-query",
            nodeid=record.nodeid,
            phase="call",
            message=(f"query while rendering template {template}: {count}× "
                     f"{short_sql(shape.fingerprint)} — {how} (render at "
                     f"{site_text(catalog, site_i)}); {fix}"),
            hint="queries hidden in templates escape review and query budgets of the view "
                 "code; keep database access in the view",
            evidence={"template": template, "via": via, "function": function, "count": count,
                      "fingerprint": shape.fingerprint, "site": site_text(catalog, site_i),
                      "site_key": site_key(catalog, site_i),
                      "fingerprint_id": shape.fingerprint_id,
                      "lines": [f"in {unit_label(phase, unit)}"]},
        ))
    findings.sort(key=lambda f: (-f.evidence["count"], f.message))
    return findings


@rule("replica-write", "fail", "a write ran on a read-only alias", switch="readonly_aliases",
      options=(RuleOption("readonly_aliases", (), "--dbguard-readonly-alias"),),
      needs_call_queries=True)
def check_replica_write(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    readonly = tuple(context.options.get("readonly_aliases") or ())
    if not readonly:
        return []
    phase = record.phase("call")
    catalog = phase.catalog
    groups: dict[tuple[int, int, int], int] = {}
    for row in phase.rows:
        shape = catalog.shapes[row[ROW_SHAPE]]
        if not shape.is_write or catalog.conns[row[ROW_CONN]].alias not in readonly:
            continue
        key = (row[ROW_SHAPE], row[ROW_SITE], row[ROW_CONN])
        groups[key] = groups.get(key, 0) + 1
    findings = []
    for (shape_i, site_i, conn_i), count in groups.items():
        shape = catalog.shapes[shape_i]
        alias = catalog.conns[conn_i].alias
        times = f"{count}× " if count > 1 else ""
        findings.append(Finding(
            rule="replica-write",
            nodeid=record.nodeid,
            phase="call",
            message=(f'write on read-only alias "{alias}": {times}{short_sql(shape.fingerprint)} '
                     f"at {site_text(catalog, site_i)}; send writes to the primary "
                     "(db_for_write in the router, or .using() with a writable alias)"),
            hint="a replica rejects writes in production (or silently diverges); "
                 "--dbguard-readonly-alias names the aliases that must stay read-only",
            evidence={"alias": alias, "count": count, "fingerprint": shape.fingerprint,
                      "site": site_text(catalog, site_i), "lines": []},
        ))
    findings.sort(key=lambda f: f.message)
    return findings


@rule("pgbouncer-unsafe", "off", "session state that breaks under transaction pooling",
      # no needs_call_queries: a test may set session state on raw psycopg connections only
      probes=frozenset({PROBE_PSYCOPG}))
def check_pgbouncer_unsafe(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    phase = record.phase("call")
    catalog = phase.catalog
    # the vendor decides what session state is (only PostgreSQL's pooler is known so far)
    groups: dict[tuple[int, int, Backend], int] = {}
    for row in phase.rows:
        key = (row[ROW_SHAPE], row[ROW_SITE], for_vendor(catalog.conns[row[ROW_CONN]].vendor))
        groups[key] = groups.get(key, 0) + 1
    findings = []
    for (shape_i, site_i, backend), count in groups.items():
        shape = catalog.shapes[shape_i]
        found = backend.pooler_unsafe(shape.fingerprint)
        if found is None:
            continue
        what, fix = found
        findings.append(Finding(
            rule="pgbouncer-unsafe",
            nodeid=record.nodeid,
            phase="call",
            message=(f"{what} breaks under transaction pooling: "
                     f"{short_sql(shape.fingerprint)} at {site_text(catalog, site_i)}; "
                     f"{fix}"),
            hint="behind PgBouncer in transaction mode the next transaction may run on "
                 "another server connection, where this session state does not exist "
                 "(or leaks to another client)",
            evidence={"kind": what, "count": count, "fingerprint": shape.fingerprint,
                      "site": site_text(catalog, site_i), "lines": []},
        ))
    findings.extend(_raw_session_state(record))
    findings.sort(key=lambda f: f.message)
    return findings


def _raw_session_state(record: TestRecord) -> list[Finding]:
    """The same session state on raw psycopg connections (and pool checkouts) of the body."""
    raw: PsycopgFacts | None = record.facts.get(PSYCOPG)
    if raw is None or not raw.statements:
        return []
    from ..recording.fingerprint import make_shape

    postgresql = for_vendor("postgresql")  # psycopg speaks to PostgreSQL only
    findings = []
    for statement in raw.statements:
        if statement.phase != "call":
            continue
        fingerprint = make_shape(statement.sql.strip()).fingerprint
        found = postgresql.pooler_unsafe(fingerprint, statement.prepared)
        if found is None:
            continue
        what, fix = found
        site = statement.site or "an unknown call site"
        findings.append(Finding(
            rule="pgbouncer-unsafe",
            nodeid=record.nodeid,
            phase="call",
            message=(f"{what} breaks under transaction pooling: {short_sql(fingerprint)} at "
                     f"{site} on a raw psycopg connection of thread {statement.thread}; {fix}"),
            hint="behind PgBouncer in transaction mode the next transaction may run on "
                 "another server connection, where this session state does not exist "
                 "(or leaks to another client)",
            evidence={"kind": what, "count": statement.count, "fingerprint": fingerprint,
                      "site": site, "lines": []},
        ))
    return findings
