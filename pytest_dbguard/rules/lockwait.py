"""lock-wait outside stress mode: waits the PostgreSQL lock sampler saw during a test body."""

from __future__ import annotations

from .. import defaults
from ..events import NO_SITE, ROW_CONN, ROW_SHAPE, ROW_SITE, Finding, TestRecord
from ..facts import LOCK_WAITS, PSYCOPG, LockHolder, LockWait, PsycopgFacts
from ..text import short_sql
from .registry import TestContext

DEFAULT_LOCK_WAIT_MS = defaults.LOCK_WAIT_MS


def lock_waits_outside_stress(record: TestRecord, context: TestContext, hint: str,
                              default_ms: int) -> list[Finding]:
    waits: list[LockWait] = record.facts.get(LOCK_WAITS) or []
    if not waits:  # the sampler ran only for tests with another connection: most have none
        return []
    threshold = int(context.options.get("lock_wait_ms", default_ms))
    if all(wait.wait_ms < threshold for wait in waits):
        return []
    sites = _sites(record)
    findings = []
    for wait in waits:
        if wait.wait_ms < threshold:
            continue
        lines = [f"{_who(wait)} waited {wait.wait_ms:.0f} ms: {short_sql(wait.sql)}"
                 f"{_at(sites, wait)}"]
        for blocker in sorted(wait.blockers, key=lambda b: b.pid):
            state = f", {blocker.state}" if blocker.state else ""
            last = (f", last statement: {short_sql(blocker.sql)}{_at(sites, blocker)}"
                    if blocker.sql else "")
            lines.append(f"blocked by {_who(blocker)}{state}{last}")
        findings.append(Finding(
            rule="lock-wait",
            nodeid=record.nodeid,
            phase="call",
            message=(f"a statement waited {wait.wait_ms:.0f} ms for a lock held by another "
                     f"connection of this test (threshold {threshold} ms)"),
            hint=hint,
            evidence={"max_wait_ms": wait.wait_ms, "lines": lines},
        ))
    return findings


def _who(entry: LockWait | LockHolder) -> str:
    thread, raw = entry.thread, entry.connection
    name = f"thread {thread}" if thread else "a backend of the test database"
    if raw:  # a raw psycopg connection or pool checkout
        name = f"{raw} of {name}" if thread else raw
    return f"{name} (pid {entry.pid})"


def _sites(record: TestRecord) -> dict[tuple[str, str], str]:
    """(thread, fingerprint) -> the call site of the first such query in the body (else in the
    set-up, where a fixture may have taken the lock), Django's or a raw psycopg connection's."""
    found: dict[tuple[str, str], str] = {}
    for phase_name in ("call", "setup"):
        phase = record.phase(phase_name)
        catalog = phase.catalog
        for row in phase.rows:
            site_i = row[ROW_SITE]
            if site_i == NO_SITE:
                continue
            extra = row[-1] or {}
            thread = extra.get("thread") or catalog.conns[row[ROW_CONN]].thread
            key = (thread, catalog.shapes[row[ROW_SHAPE]].fingerprint)
            found.setdefault(key, str(catalog.sites[site_i]))
    raw: PsycopgFacts | None = record.facts.get(PSYCOPG)
    if raw is not None and raw.statements:
        from ..recording.fingerprint import make_shape

        for statement in sorted(raw.statements, key=lambda st: st.phase != "call"):
            if statement.phase in ("setup", "call") and statement.site:
                key = (statement.thread, make_shape(statement.sql).fingerprint)
                found.setdefault(key, statement.site)
    return found


def _at(sites: dict[tuple[str, str], str], entry: LockWait | LockHolder) -> str:
    site = sites.get((entry.thread or "", entry.sql))
    return f" at {site}" if site else ""
