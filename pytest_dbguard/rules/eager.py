"""unused-eager-load: a select_related field or prefetch_related lookup nothing ever read."""

from __future__ import annotations

from collections.abc import Iterable

from ..events import Finding, TestRecord
from ..facts import EAGER_LOADS, EagerLoad
from .nplusone import is_test_code
from .registry import PROBE_EAGER_LOADS, SUSPENDED, TestContext, rule


def asked(load: EagerLoad) -> str:
    """The call as the code wrote it, as near as the record knows."""
    if load.to_attr:
        return f'{load.method}(Prefetch("{load.path}", to_attr="{load.to_attr}"))'
    if load.method == "select_related" and not load.path:
        return "select_related()"
    return f'{load.method}("{load.path}")'


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _what(load: EagerLoad) -> str:
    name = load.to_attr or load.path.rsplit("__", 1)[-1]
    rows = _plural(load.rows, f"{load.holder} row")
    if load.method == "select_related":
        some = f" ({load.loaded} of them had one)" if load.loaded < load.rows else ""
        return f"{name} never read on {rows}{some}"
    return (f"{name} never read: {_plural(load.loaded, 'object')} prefetched for {rows}")


def _fix(load: EagerLoad) -> str:
    name = load.path.rsplit("__", 1)[-1]
    key = (f"; {load.holder.lower()}.{name}_id, the key alone, is on the row without it"
           if load.forward else "")
    if load.method == "select_related":
        parent = load.path.rsplit("__", 1)[0] if "__" in load.path else ""
        keep = f' (keep "{parent}" if it is read)' if parent else ""
        return (f'drop "{load.path}" from select_related(){keep}: the join and its columns '
                f"are loaded for nothing{key}")
    if load.to_attr:
        return (f'drop the Prefetch("{load.path}", to_attr="{load.to_attr}") from '
                "prefetch_related(): its query runs for nothing")
    parent = load.path.rsplit("__", 1)[0] if "__" in load.path else ""
    keep = f' (prefetch only "{parent}" if that is read)' if parent else ""
    return (f'drop "{load.path}" from prefetch_related(){keep}: its query runs for '
            f"nothing{key}")


@rule("unused-eager-load", "warn",
      "a select_related field or prefetch_related lookup whose objects are never read",
      probes=frozenset({PROBE_EAGER_LOADS}), stress=SUSPENDED, needs_call_queries=True)
def check_unused_eager_load(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    loads: tuple[EagerLoad, ...] = record.facts.get(EAGER_LOADS) or ()
    findings = []
    for load in loads:
        # nothing to judge: no rows, or no related object to read (a null FK on every row)
        if load.used or not load.rows or not load.loaded or is_test_code(load.site):
            continue
        site = str(load.site) if load.site is not None else "an unknown call site"
        where = f"request {load.unit}" if load.unit else "the test body"
        times = (f"; querysets from that line ran {load.evaluations} times, none read it"
                 if load.evaluations > 1 else "")
        lines = [f"in {where}{times}"]
        findings.append(Finding(
            rule="unused-eager-load",
            nodeid=record.nodeid,
            phase="call",
            message=f"unused eager load: {load.model} {asked(load)} at {site} — "
                    f"{_what(load)}",
            hint=_fix(load),
            evidence={
                "count": load.rows,
                "loaded": load.loaded,
                "model": load.model,
                "method": load.method,
                "path": load.path,
                "to_attr": load.to_attr,
                "evaluations": load.evaluations,
                "site": site,
                "site_key": (f"{load.site.path}::{load.site.function}"
                             if load.site is not None else ""),
                "unit": where,
                "lines": lines,
            },
        ))
    findings.sort(key=lambda f: (f.evidence["site"], f.evidence["path"]))
    return findings
