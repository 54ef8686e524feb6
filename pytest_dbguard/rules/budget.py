"""The `budget` rule: a test's call phase may run at most N queries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..events import ROW_CONN, ROW_SHAPE, Finding, PhaseRecord, TestRecord, alias_filter
from ..text import short_sql
from .registry import THREAD_ROUNDS, TestContext, rule

# How many query shapes a budget message lists before summarising the rest.
SHAPES_SHOWN = 8


@dataclass(frozen=True)
class Budget:
    """A parsed @pytest.mark.query_budget(n, *, using=None, count_tx=False)."""

    limit: int
    using: tuple[str, ...] | None = None
    count_tx: bool = False
    source: str = "query_budget marker"


def restrict(phase: PhaseRecord, using: tuple[str, ...] | None, count_tx: bool) -> PhaseRecord:
    """The phase as the budget sees it: only the named aliases, transaction control if asked."""
    if using is None and not count_tx:
        return phase
    aliases = alias_filter(using)
    shapes, conns = phase.catalog.shapes, phase.catalog.conns
    rows = [
        row for row in phase.rows
        if aliases is None or conns[row[ROW_CONN]].alias in aliases
    ]
    # the recorder's aggregation, imported on use: option parsing loads this module early
    from ..recording.recorder import build_phase

    restricted = build_phase(phase.phase, rows, phase.units, phase.catalog)
    if count_tx:
        tx = sum(1 for row in rows if shapes[row[ROW_SHAPE]].is_transaction_control is True)
        return PhaseRecord(restricted.phase, restricted.query_count + tx, 0,
                           restricted.by_alias, restricted.duration_ms,
                           restricted.lazy_fingerprints, restricted.rows, restricted.units,
                           restricted.catalog)
    return restricted


def describe_excess(phase: PhaseRecord, budget: Budget, nodeid: str, where: str = "call"
                    ) -> Finding | None:
    """A budget finding if the phase ran more queries than the budget allows, else None."""
    view = restrict(phase, budget.using, budget.count_tx)
    count = view.query_count
    if count <= budget.limit:
        return None
    aliases = sorted({alias for alias, n in view.by_alias if n}) or list(budget.using or ())
    alias_text = (f"alias {aliases[0]}" if len(aliases) == 1
                  else "aliases " + ", ".join(aliases))
    message = (f"query budget exceeded: {count} queries > budget {budget.limit} ({alias_text})")
    if budget.source != "query_budget marker":
        message += f" [{budget.source}]"
    shown = [fp for fp in view.fingerprints
             if budget.count_tx or not fp.is_transaction_control]
    lines = []
    for fp in shown[:SHAPES_SHOWN]:
        sites = [(site, n) for site, n in fp.call_sites]
        if len(sites) == 1:
            site_text = f"  at {sites[0][0]}" if sites[0][0] else ""
        else:
            site_text = "  at " + ", ".join(
                f"{site or '?'} ({n}×)" for site, n in sites[:4]
            ) + (", ..." if len(sites) > 4 else "")
        lines.append(f"{fp.count}× {short_sql(fp.fingerprint)}{site_text}")
    if len(shown) > SHAPES_SHOWN:
        rest = sum(fp.count for fp in shown[SHAPES_SHOWN:])
        lines.append(f"... {rest} more queries in {len(shown) - SHAPES_SHOWN} other shapes")
    top = shown[0] if shown else None
    hint = "cut the repeated queries (select_related / prefetch_related, hoist lookups out of " \
           "loops) or raise the budget if the new count is intended"
    if top is not None and top.count > 1 and len(top.call_sites) == 1 and top.call_sites[0][0]:
        hint = (f"the biggest group is {top.count}× one shape from {top.call_sites[0][0]}: "
                + hint)
    return Finding(
        rule="budget",
        nodeid=nodeid,
        phase=where,
        message=message,
        hint=hint,
        evidence={
            "count": count,
            "budget": budget.limit,
            "aliases": aliases,
            "source": budget.source,
            "lines": lines,
            "fingerprints": [fp.to_dict() for fp in shown[:SHAPES_SHOWN]],
        },
    )


@rule("budget", "fail", "call-phase queries exceed query_budget(n) or --dbguard-max-queries",
      marker="query_budget", stress=THREAD_ROUNDS, needs_call_queries=True)
def check_budget(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    budget = context.budget
    if budget is None and context.max_queries is not None:
        budget = Budget(context.max_queries, source="--dbguard-max-queries")
    if budget is None:
        return ()
    finding = describe_excess(record.phase("call"), budget, record.nodeid)
    return (finding,) if finding else ()
