"""N+1 rules: `nplusone` (lazy relation loads) and `nplusone-loop`.

Also the helpers the other repeated-query rules share (duplicate.py, shape.py): the threshold,
unit and call-site wording, test-code sites, the rows outside lazy loads (plain_groups).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter

from .. import defaults
from ..events import (
    NO_SITE,
    ROW_CONN,
    ROW_CONTEXT,
    ROW_EXTRA,
    ROW_FLAGS,
    ROW_SHAPE,
    ROW_SITE,
    ROW_UNIT,
    CallSite,
    Catalog,
    Finding,
    PhaseRecord,
    QueryContext,
    QueryRow,
    Relation,
    TestRecord,
    param_key,
)
from ..text import short_sql
from .known import site_key
from .registry import (
    PROBE_BODY_UNITS,
    PROBE_LOAD_GROUPS,
    THREAD_ROUNDS,
    RuleOption,
    TestContext,
    rule,
)

DEFAULT_THRESHOLD = defaults.NPLUSONE_THRESHOLD
THRESHOLD_OPTION = RuleOption("nplusone_threshold", DEFAULT_THRESHOLD,
                              "--dbguard-nplusone-threshold")


def threshold_of(context: TestContext) -> int:
    return int(context.options.get("nplusone_threshold", DEFAULT_THRESHOLD))


_shape_of = itemgetter(ROW_SHAPE)
# (phase, (its row count, threshold), answer) of the last repeats_reach call; the phase is held
# so that its id cannot be reused
_last_answer: list[object] = []


def repeats_reach(phase: PhaseRecord, threshold: int) -> bool:
    """Whether some query shape ran at least `threshold` times in the phase.

    Every group the repeated-query rules judge (nplusone, nplusone-loop, duplicate) holds rows
    of one shape (one statement with its parameters is one SQL text, so one shape too): when
    no shape reaches the threshold, none of them can fire, and they return before grouping.
    """
    rows = phase.rows
    if len(rows) < threshold:
        return False
    if threshold <= 1:
        return True
    # the three rules ask in a row about one phase: the answer is kept for the last one
    last = _last_answer
    if last and last[0] is phase and last[1] == (len(rows), threshold):
        return bool(last[2])
    shapes = list(map(_shape_of, rows))
    # a shape run c times makes c - 1 of the rows repeats: too few repeats, no shape got there
    reached = (len(shapes) - len(set(shapes)) >= threshold - 1
               and max(Counter(shapes).values()) >= threshold)
    _last_answer[:] = (phase, (len(rows), threshold), reached)
    return reached


def repeated_call_phase(record: TestRecord, context: TestContext
                        ) -> tuple[PhaseRecord, int] | None:
    """The call phase and the threshold when some query shape reached it there, else None:
    the common start of the repeated-query rules."""
    phase = record.phase("call")
    if not phase.rows:
        return None
    threshold = threshold_of(context)
    if not repeats_reach(phase, threshold):
        return None
    return phase, threshold


def unit_label(phase: PhaseRecord, unit: int) -> str:
    return f"request {phase.units[unit]}" if unit and unit in phase.units else "the test body"


def is_test_code(site: CallSite | None) -> bool:
    """A call site inside a test module or conftest: the test's own queries, not the app's.

    Tests re-read rows to assert on them and build data in loops; repetition there says
    nothing about the code under test, so the loop and duplicate rules leave it alone.
    """
    if site is None:
        return False
    path = site.path.replace("\\", "/")
    name = os.path.basename(path)
    if name == "conftest.py" or name.startswith("test_") or name.endswith("_test.py"):
        return True
    return any(part in ("tests", "test") for part in path.split("/")[:-1])


def site_text(catalog: Catalog, site_i: int) -> str:
    return str(catalog.sites[site_i]) if site_i != NO_SITE else "an unknown call site"


@dataclass
class LazyGroup:
    """Lazy loads of one relation, one query shape, from one call site, in one unit of work."""

    unit: int
    relation: Relation
    shape_i: int
    site_i: int
    positions: list[int] = field(default_factory=list)
    contexts: set[QueryContext] = field(default_factory=set)


def lazy_groups(phase: PhaseRecord) -> dict[tuple[int, Relation, int, int], LazyGroup]:
    catalog = phase.catalog
    contexts, shapes = catalog.contexts, catalog.shapes
    groups: dict[tuple[int, Relation, int, int], LazyGroup] = {}
    for position, row in enumerate(phase.rows):
        context_i = row[ROW_CONTEXT]
        if not context_i:
            continue
        context = contexts[context_i]
        relation = context.relation
        if relation is None or context.suppressed or shapes[row[ROW_SHAPE]].is_write:
            continue
        key = (row[ROW_UNIT], relation, row[ROW_SHAPE], row[ROW_SITE])
        group = groups.get(key)
        if group is None:
            group = groups[key] = LazyGroup(*key)
        group.positions.append(position)
        group.contexts.add(context)
    return groups


def load_counts(phase: PhaseRecord, group: LazyGroup) -> dict[int, int]:
    """Lazy loads per load group (see recording.loads); instances loaded alone are left out."""
    counts: dict[int, int] = {}
    rows = phase.rows
    for position in group.positions:
        extra = rows[position][ROW_EXTRA]
        load = extra.get("load", 0) if extra is not None else 0
        if load:
            counts[load] = counts.get(load, 0) + 1
    return counts


def one_queryset_row_by_row(counts: dict[int, int], threshold: int) -> int:
    """How many lazy loads make an N+1: 0 unless rows of one query were loaded one by one.

    Instances that came alone (create(), get(), get_or_create(), first()) never add up to an
    N+1: no queryset loaded them, so no prefetch_related can help. Several multi-row groups
    (one queryset per parent in a nested loop) count together, as long as some group had
    its relation loaded for two or more of its rows.
    """
    if not counts or max(counts.values()) < 2:
        return 0
    total = sum(counts.values())
    return total if total >= threshold else 0


def relation_field(relation: Relation, fingerprint: str) -> str:
    """The relation's field; among several candidates, the one whose join table the SQL uses."""
    for name, table in relation.candidates:
        if table and (f'"{table}"' in fingerprint or f"`{table}`" in fingerprint):
            return name
    return relation.field


def fix_for(relation: Relation, field_name: str, context: QueryContext) -> str:
    if relation.kind in ("forward", "reverse-one"):
        return f'use select_related("{field_name}")'
    if relation.kind == "deferred":
        return f'load "{field_name}" with the queryset (drop it from defer() / only())'
    if relation.kind == "generic-fk":
        return f'use prefetch_related("{field_name}")'
    if context.bypassed_prefetch:
        return (f'use prefetch_related(Prefetch("{field_name}", queryset=...)) instead of '
                "filtering the prefetched relation per object")
    if context.operation in ("count", "exists"):
        return f'use annotate({field_name}_count=Count("{field_name}"))'
    return f'use prefetch_related("{field_name}")'


@rule("nplusone", "fail", "one query shape repeated by lazy relation access",
      options=(THRESHOLD_OPTION,), probes=frozenset({PROBE_LOAD_GROUPS, PROBE_BODY_UNITS}),
      stress=THREAD_ROUNDS, needs_call_queries=True)
def check_nplusone(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    reached = repeated_call_phase(record, context)
    if reached is None:
        return []
    phase, threshold = reached
    findings = []
    for group in lazy_groups(phase).values():
        if len(group.positions) < threshold:
            continue
        count = one_queryset_row_by_row(load_counts(phase, group), threshold)
        if not count:
            continue
        finding = _nplusone_finding(record, phase, group, count)
        repeated = min(_same_statement_repeats(phase, group.positions), count)
        if repeated >= threshold:
            finding.evidence["lines"].append(
                f"{repeated} of them are the same statement with the same parameters: the "
                f"same row loaded again (also reported as duplicate)")
        findings.append(finding)
    findings.sort(key=lambda f: (-f.evidence["count"], f.message))
    return findings


def _nplusone_finding(record: TestRecord, phase: PhaseRecord, group: LazyGroup,
                      count: int) -> Finding:
    catalog = phase.catalog
    shape = catalog.shapes[group.shape_i]
    relation = group.relation
    field_name = relation_field(relation, shape.fingerprint)
    query_context = sorted(group.contexts, key=lambda c: (c.template or "", c.operation))[0]
    fix = fix_for(relation, field_name, query_context)
    label = f"{relation.model}.{field_name}"
    access = label + (f".{query_context.operation}()"
                      if relation.kind == "manager" and query_context.operation != "fetch"
                      else "")
    site = site_text(catalog, group.site_i)
    message = f"N+1: {count}× {short_sql(shape.fingerprint)} — lazy {access} at {site}; {fix}"
    lines = [f"in {unit_label(phase, group.unit)}, alias "
             f"{catalog.conns[phase.rows[group.positions[0]][ROW_CONN]].alias}"]
    if query_context.template:
        lines.append(f"while rendering template {query_context.template}")
    kind_text = {
        "forward": "each access loads one related object",
        "reverse-one": "each access loads one related object",
        "manager": "each access to the related manager runs its own query",
        "generic-fk": "each access loads one related object",
        "deferred": "each access loads one deferred column",
    }[relation.kind]
    hint = (f"{kind_text}: {label} was read on {count} {relation.model} objects one by one; "
            f"{fix} on the queryset that loads the {relation.model} objects")
    return Finding(
        rule="nplusone",
        nodeid=record.nodeid,
        phase="call",
        message=message,
        hint=hint,
        evidence={
            "count": count,
            "relation": label,
            "kind": relation.kind,
            "fingerprint": shape.fingerprint,
            "fingerprint_id": shape.fingerprint_id,
            "site": site,
            "site_key": site_key(catalog, group.site_i),
            "unit": unit_label(phase, group.unit),
            "template": query_context.template,
            "lines": lines,
        },
    )


def plain_groups(phase: PhaseRecord, reads_only: bool
                  ) -> Iterator[tuple[tuple[int, int, int], list[QueryRow]]]:
    """Rows outside lazy loads and Django's own batch work, grouped by (unit, shape, site)."""
    catalog = phase.catalog
    shapes, contexts, sites = catalog.shapes, catalog.contexts, catalog.sites
    groups: dict[tuple[int, int, int], list[QueryRow]] = {}
    test_sites: dict[int, bool] = {}
    for row in phase.rows:
        shape = shapes[row[ROW_SHAPE]]
        if shape.is_transaction_control or (reads_only and shape.is_write):
            continue
        context_i = row[ROW_CONTEXT]
        if context_i:
            context = contexts[context_i]
            if context.relation is not None or context.suppressed:
                continue
        site_i = row[ROW_SITE]
        in_test = test_sites.get(site_i)
        if in_test is None:
            in_test = test_sites[site_i] = site_i == NO_SITE or is_test_code(sites[site_i])
        if in_test:
            continue
        groups.setdefault((row[ROW_UNIT], row[ROW_SHAPE], site_i), []).append(row)
    yield from groups.items()


@rule("nplusone-loop", "warn", "one query shape repeated from one call site in a loop",
      options=(THRESHOLD_OPTION,), probes=frozenset({PROBE_BODY_UNITS}), stress=THREAD_ROUNDS,
      needs_call_queries=True)
def check_nplusone_loop(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    reached = repeated_call_phase(record, context)
    if reached is None:
        return []
    phase, threshold = reached
    catalog = phase.catalog
    # one finding per (shape, call site): the same loop run by several units of work (calls
    # of the test body, requests) is one place to fix
    places: dict[tuple[int, int], list[tuple[int, list[QueryRow]]]] = {}
    for (unit, shape_i, site_i), rows in plain_groups(phase, reads_only=True):
        if len(rows) < threshold:
            continue
        keys = {param_key(row[ROW_FLAGS]) for row in rows}
        if len(keys) == 1 and 0 not in keys:
            continue  # the very same statement each time: the duplicate rule's case
        if not _reads_rows(catalog.shapes[shape_i].verb):
            continue
        places.setdefault((shape_i, site_i), []).append((unit, rows))
    findings = []
    for (shape_i, site_i), runs in places.items():
        unit, rows = max(runs, key=lambda run: len(run[1]))
        count = len(rows)
        shape = catalog.shapes[shape_i]
        site = site_text(catalog, site_i)
        where = unit_label(phase, unit)
        times = f" (the loop ran {len(runs)} times)" if len(runs) > 1 else ""
        message = (f"N+1 loop: {count}× {short_sql(shape.fingerprint)} — one query per item "
                   f"at {site}{times}; fetch the items in one query before the loop "
                   "(filter(pk__in=...), in_bulk() or a join)")
        findings.append(Finding(
            rule="nplusone-loop",
            nodeid=record.nodeid,
            phase="call",
            message=message,
            hint="the same query shape ran from one line with different parameters, once per "
                 "item; load everything the loop needs up front and look items up in a dict",
            evidence={
                "count": count,
                "runs": len(runs),
                "fingerprint": shape.fingerprint,
                "fingerprint_id": shape.fingerprint_id,
                "site": site,
                "site_key": site_key(catalog, site_i),
                "unit": where,
                "lines": [f"in {where}, alias {catalog.conns[rows[0][ROW_CONN]].alias}"],
            },
        ))
    findings.sort(key=lambda f: (-f.evidence["count"], f.message))
    return findings


def _reads_rows(verb: str) -> bool:
    return verb in ("SELECT", "WITH", "VALUES", "TABLE")


def _same_statement_repeats(phase: PhaseRecord, positions: list[int]) -> int:
    """The largest number of rows among `positions` with one SQL+parameters digest."""
    counts: dict[int, int] = {}
    for position in positions:
        key = param_key(phase.rows[position][ROW_FLAGS])
        if key:
            counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=0)
