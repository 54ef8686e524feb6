"""Repeated-query rules: `nplusone` (lazy relation loads), `nplusone-loop` and `duplicate`."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..events import (
    NO_SITE,
    ROW_CONN,
    ROW_CONTEXT,
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
from .registry import PROBE_PARAM_KEYS, SUSPENDED, RuleOption, TestContext, rule

DEFAULT_THRESHOLD = 3
THRESHOLD_OPTION = RuleOption("nplusone_threshold", DEFAULT_THRESHOLD,
                              "--dbguard-nplusone-threshold")


def threshold_of(context: TestContext) -> int:
    return int(context.options.get("nplusone_threshold", DEFAULT_THRESHOLD))


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


def loader_positions(phase: PhaseRecord) -> dict[tuple[int, str], list[int]]:
    """Positions of plain SELECTs that load model rows, per (unit, table)."""
    catalog = phase.catalog
    shapes, contexts = catalog.shapes, catalog.contexts
    tables: dict[int, str | None] = {}
    found: dict[tuple[int, str], list[int]] = {}
    for position, row in enumerate(phase.rows):
        context_i = row[ROW_CONTEXT]
        if context_i and contexts[context_i].relation is not None:
            continue
        shape_i = row[ROW_SHAPE]
        table = tables.get(shape_i, "")
        if table == "":
            table = tables[shape_i] = _loaded_table(shapes[shape_i].fingerprint)
        if table:
            found.setdefault((row[ROW_UNIT], table), []).append(position)
    return found


def _loaded_table(fingerprint: str) -> str | None:
    # Django selects a model's columns qualified by its table, primary key first:
    # SELECT "shop_book"."id", ... FROM "shop_book" ...
    text = fingerprint[len("SELECT "):] if fingerprint.startswith("SELECT ") else None
    if text is None:
        return None
    if text.startswith("DISTINCT "):
        text = text[len("DISTINCT "):]
    for quote in ('"', "`"):
        if text.startswith(quote):
            end = text.find(quote, 1)
            if end > 0 and text[end + 1:end + 2] == ".":
                return text[1:end]
    return None


def loaded_one_by_one(group: LazyGroup, loaders: dict[tuple[int, str], list[int]]) -> bool:
    """True when every lazy load followed its own load of the instance (get() per item).

    Such instances do not come from one queryset: select_related on a queryset would not
    help; the loop of single loads is the problem and nplusone-loop reports it.
    """
    found = loaders.get((group.unit, group.relation.source_table))
    if not found:
        return False
    positions = group.positions
    for before, after in zip(positions, positions[1:], strict=False):
        i = bisect.bisect_right(found, before)
        if i >= len(found) or found[i] > after:
            return False
    return True


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
      options=(THRESHOLD_OPTION,), stress=SUSPENDED)
def check_nplusone(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    phase = record.phase("call")
    if not phase.rows:
        return []
    threshold = threshold_of(context)
    loaders: dict[tuple[int, str], list[int]] | None = None
    findings = []
    for group in lazy_groups(phase).values():
        count = len(group.positions)
        if count < threshold:
            continue
        if loaders is None:
            loaders = loader_positions(phase)
        if loaded_one_by_one(group, loaders):
            continue
        findings.append(_nplusone_finding(record, phase, group, count))
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
            "unit": unit_label(phase, group.unit),
            "template": query_context.template,
            "lines": lines,
        },
    )


def _plain_groups(phase: PhaseRecord, reads_only: bool
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
      options=(THRESHOLD_OPTION,), stress=SUSPENDED)
def check_nplusone_loop(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    phase = record.phase("call")
    if not phase.rows:
        return []
    threshold = threshold_of(context)
    catalog = phase.catalog
    findings = []
    for (unit, shape_i, site_i), rows in _plain_groups(phase, reads_only=True):
        count = len(rows)
        if count < threshold:
            continue
        keys = {param_key(row[ROW_FLAGS]) for row in rows}
        if len(keys) == 1 and 0 not in keys:
            continue  # the very same statement each time: the duplicate rule's case
        if not _reads_rows(catalog.shapes[shape_i].verb):
            continue
        shape = catalog.shapes[shape_i]
        site = site_text(catalog, site_i)
        message = (f"N+1 loop: {count}× {short_sql(shape.fingerprint)} — one query per item "
                   f"at {site}; fetch the items in one query before the loop "
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
                "fingerprint": shape.fingerprint,
                "fingerprint_id": shape.fingerprint_id,
                "site": site,
                "unit": unit_label(phase, unit),
                "lines": [f"in {unit_label(phase, unit)}, alias "
                          f"{catalog.conns[rows[0][ROW_CONN]].alias}"],
            },
        ))
    findings.sort(key=lambda f: (-f.evidence["count"], f.message))
    return findings


def _reads_rows(verb: str) -> bool:
    return verb in ("SELECT", "WITH", "VALUES", "TABLE")


@rule("duplicate", "warn", "the same SQL with the same parameters repeated",
      options=(THRESHOLD_OPTION,), probes=frozenset({PROBE_PARAM_KEYS}), stress=SUSPENDED)
def check_duplicate(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    phase = record.phase("call")
    if not phase.rows:
        return []
    threshold = threshold_of(context)
    catalog = phase.catalog
    same: dict[tuple[int, int], list[QueryRow]] = {}
    for (unit, _shape_i, _site_i), rows in _plain_groups(phase, reads_only=False):
        for row in rows:
            key = param_key(row[ROW_FLAGS])
            if key:
                same.setdefault((unit, key), []).append(row)
    findings = []
    for (unit, _key), rows in same.items():
        count = len(rows)
        if count < threshold:
            continue
        shape = catalog.shapes[rows[0][ROW_SHAPE]]
        site_counts: dict[int, int] = {}
        for row in rows:
            site_counts[row[ROW_SITE]] = site_counts.get(row[ROW_SITE], 0) + 1
        ordered = sorted(site_counts.items(), key=lambda item: (-item[1], item[0]))
        if len(ordered) == 1:
            where = site_text(catalog, ordered[0][0])
        else:
            where = ", ".join(f"{site_text(catalog, s)} ({n}×)" for s, n in ordered[:4])
        message = (f"duplicate query: {count}× the same {short_sql(shape.fingerprint)} with the "
                   f"same parameters at {where}; run it once and reuse the result")
        findings.append(Finding(
            rule="duplicate",
            nodeid=record.nodeid,
            phase="call",
            message=message,
            hint="hoist the query out of the loop, keep the object you already loaded, or "
                 "cache it for the request (functools.cached_property, a local variable)",
            evidence={
                "count": count,
                "fingerprint": shape.fingerprint,
                "fingerprint_id": shape.fingerprint_id,
                "sites": [site_text(catalog, s) for s, _ in ordered],
                "unit": unit_label(phase, unit),
                "lines": [f"in {unit_label(phase, unit)}, alias "
                          f"{catalog.conns[rows[0][ROW_CONN]].alias}"],
            },
        ))
    findings.sort(key=lambda f: (-f.evidence["count"], f.message))
    return findings
