"""`duplicate`: the same SQL with the same parameters run again and again in one unit of work."""

from __future__ import annotations

from collections.abc import Iterable

from ..events import (
    ROW_CONN,
    ROW_CONTEXT,
    ROW_FLAGS,
    ROW_SHAPE,
    ROW_SITE,
    ROW_UNIT,
    Finding,
    PhaseRecord,
    QueryRow,
    TestRecord,
    param_key,
)
from ..text import short_sql
from .known import site_key
from .nplusone import (
    THRESHOLD_OPTION,
    plain_groups,
    repeated_call_phase,
    site_text,
    unit_label,
)
from .registry import PROBE_BODY_UNITS, PROBE_PARAM_KEYS, THREAD_ROUNDS, TestContext, rule


@rule("duplicate", "warn", "the same SQL with the same parameters repeated",
      options=(THRESHOLD_OPTION,), probes=frozenset({PROBE_PARAM_KEYS, PROBE_BODY_UNITS}),
      stress=THREAD_ROUNDS, needs_call_queries=True)
def check_duplicate(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    reached = repeated_call_phase(record, context)
    if reached is None:
        return []
    phase, threshold = reached
    catalog = phase.catalog
    same: dict[tuple[int, int], list[QueryRow]] = {}
    for (unit, _shape_i, _site_i), rows in plain_groups(phase, reads_only=False):
        for row in rows:
            key = param_key(row[ROW_FLAGS])
            if key:
                same.setdefault((unit, key), []).append(row)
    # one finding per statement: the largest repeat among the units that repeated it
    best: dict[int, tuple[int, list[QueryRow]]] = {}
    for (unit, key), rows in same.items():
        if len(rows) >= threshold and (key not in best or len(rows) > len(best[key][1])):
            best[key] = (unit, rows)
    findings = []
    groups: list[tuple[int, list[QueryRow], str | None]] = [
        (unit, rows, None) for unit, rows in best.values()]
    # the same for lazy loads of one related row, again one finding per statement
    best_lazy: dict[int, tuple[int, list[QueryRow], str]] = {}
    for (unit, key), (rows, label) in _lazy_repeats(phase).items():
        if len(rows) >= threshold and (key not in best_lazy
                                       or len(rows) > len(best_lazy[key][1])):
            best_lazy[key] = (unit, rows, label)
    groups.extend(best_lazy.values())
    for unit, rows, lazy in groups:
        count = len(rows)
        shape = catalog.shapes[rows[0][ROW_SHAPE]]
        # counted per location text: two instructions on one line are one place to the reader
        site_counts: dict[str, int] = {}
        for row in rows:
            text = site_text(catalog, row[ROW_SITE])
            site_counts[text] = site_counts.get(text, 0) + 1
        ordered = sorted(site_counts.items(), key=lambda item: (-item[1], item[0]))
        if len(ordered) == 1:
            where = ordered[0][0]
        else:
            where = ", ".join(f"{s} ({n}×)" for s, n in ordered[:4])
        message = (f"duplicate query: {count}× the same {short_sql(shape.fingerprint)} with the "
                   f"same parameters at {where}; run it once and reuse the result")
        if lazy is not None:
            message = (f"duplicate query: {count}× the same {short_sql(shape.fingerprint)} with "
                       f"the same parameters at {where}, by lazy {lazy}: the same row loaded "
                       f"again each time (the N+1 on {lazy} is reported as nplusone); keep the "
                       f"object you already loaded")
        findings.append(Finding(
            rule="duplicate",
            nodeid=record.nodeid,
            phase="call",
            # part of an N+1 that fails the test already: never a second failure
            action="warn" if lazy is not None else "fail",
            message=message,
            hint="hoist the query out of the loop, keep the object you already loaded, or "
                 "cache it for the request (functools.cached_property, a local variable)",
            evidence={
                "count": count,
                "fingerprint": shape.fingerprint,
                "fingerprint_id": shape.fingerprint_id,
                "sites": [s for s, _ in ordered],
                "site_key": min(site_key(catalog, row[ROW_SITE]) for row in rows),
                "unit": unit_label(phase, unit),
                "lines": [f"in {unit_label(phase, unit)}, alias "
                          f"{catalog.conns[rows[0][ROW_CONN]].alias}"],
            },
        ))
    findings.sort(key=lambda f: (-f.evidence["count"], f.message))
    return findings


def _lazy_repeats(phase: PhaseRecord) -> dict[tuple[int, int], tuple[list[QueryRow], str]]:
    """Lazy loads of the same statement with the same parameters: the same related object
    loaded again and again, (unit, digest) -> (rows, relation label)."""
    contexts = phase.catalog.contexts
    same: dict[tuple[int, int], tuple[list[QueryRow], str]] = {}
    for row in phase.rows:
        context_i = row[ROW_CONTEXT]
        if not context_i:
            continue
        context = contexts[context_i]
        key = param_key(row[ROW_FLAGS])
        if context.relation is None or context.suppressed or not key:
            continue
        entry = same.get((row[ROW_UNIT], key))
        if entry is None:
            entry = same[(row[ROW_UNIT], key)] = ([], context.relation.label)
        entry[0].append(row)
    return same
