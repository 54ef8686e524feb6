"""`async-orm`: sync ORM code on a thread whose event loop is running."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from operator import itemgetter

from ..events import FLAG_IN_EVENT_LOOP, NO_SITE, ROW_FLAGS, Finding, TestRecord
from ..text import plural, short_sql
from .lifecycle import LIFECYCLE_PROBES, lifecycle_facts
from .registry import TestContext, rule

HINT_ASYNC = ("in async code use the async ORM (`await Model.objects.aget(...)`, `acount()`, "
              "`async for`) or move the sync code into `await sync_to_async(func)()`; a sync "
              "query on the event loop stalls everything else the loop serves, and "
              "DJANGO_ALLOW_ASYNC_UNSAFE only hides the error")
_FLAGS_OF = itemgetter(ROW_FLAGS)
_IN_EVENT_LOOP = FLAG_IN_EVENT_LOOP.__and__


@rule("async-orm", "fail", "a query ran on a thread with a running event loop",
      probes=LIFECYCLE_PROBES)
def check_async_orm(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    findings: list[Finding] = []
    groups: Counter[tuple[int, int]] | None = None
    catalog = None
    phases = record.phases
    for phase in ("setup", "call"):
        phase_record = phases.get(phase)
        # the flags tested in C first: a phase without a query on an event loop is the rule
        if phase_record is None or not any(map(_IN_EVENT_LOOP, map(_FLAGS_OF,
                                                                   phase_record.rows))):
            continue
        rows = phase_record.rows
        if groups is None:
            groups = Counter()
        for shape_i, site_i, _, _, _, flags, _, _ in rows:
            if flags & FLAG_IN_EVENT_LOOP:
                groups[(site_i, shape_i)] += 1
                catalog = phase_record.catalog
    if groups and catalog is not None:
        total = sum(groups.values())
        unsafe = lifecycle_facts(record).get("allow_async_unsafe")
        lines = []
        for (site_i, shape_i), n in sorted(groups.items(), key=lambda g: (-g[1], g[0])):
            site = catalog.sites[site_i] if site_i != NO_SITE else None
            lines.append(f"{n}× {short_sql(catalog.shapes[shape_i].fingerprint)}  at "
                         f"{site or 'an unknown place'}")
        message = (f"{plural(total, 'query', 'queries')} ran on a thread with a running event "
                   f"loop: sync ORM code inside async code")
        if unsafe:
            message += (" (DJANGO_ALLOW_ASYNC_UNSAFE is set, so Django did not raise "
                        "SynchronousOnlyOperation)")
        findings.append(Finding(rule="async-orm", nodeid=record.nodeid, phase="call",
                                message=message, hint=HINT_ASYNC, evidence={"lines": lines}))
    raised = record.facts.get("raised")
    if raised and "sync_only_site" in raised:
        where = raised["sync_only_site"] or "an unknown place"
        findings.append(Finding(
            rule="async-orm", nodeid=record.nodeid, phase="call",
            message=f"the test failed with SynchronousOnlyOperation: sync ORM code was called "
                    f"from async code at {where}",
            hint=HINT_ASYNC,
            evidence={"lines": []},
        ))
    return findings
