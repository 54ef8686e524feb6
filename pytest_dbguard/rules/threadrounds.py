"""Rules that judge a stressed test one run of its body at a time (stress=THREAD_ROUNDS).

Under stress every thread runs the body once per round, each run in units of work of its own
(recording/threadrounds.py). Such a rule sees each run (thread-round) as the call phase of a
test of its own, so a budget counts one run's queries and an N+1 is one run's repetition, never
the threads x rounds repetition stress makes by design. Queries outside every run (the harness
connecting, waiting, closing; threads the body starts itself) are in none.

The same mistake in several runs is one finding: the worst run's, with how many runs showed it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..events import ROW_SHAPE, ROW_SITE, ROW_UNIT, Finding, TestRecord
from ..stress.facts import STRESS, StressFacts
from .nplusone import site_text
from .registry import RuleSpec, TestContext

Run = tuple[tuple[int, int], TestRecord]  # ((round, thread), the record of that run alone)


def thread_round_records(record: TestRecord) -> list[Run]:
    """One record per run of the body, by round then thread; [] when nothing ran."""
    stress: StressFacts | None = record.facts.get(STRESS)
    if stress is None:
        return []
    owner = {u.unit: (u.round, u.thread) for u in stress.units}
    call = record.phase("call")
    split: dict[tuple[int, int], list[Any]] = {key: [] for key in sorted(set(owner.values()))}
    for row in call.rows:
        key = owner.get(row[ROW_UNIT])
        if key is not None:
            split[key].append(row)
    # the recorder's aggregation, imported on use like the budget rule's
    from ..recording.recorder import build_phase

    return [(key, replace(record, phases={**record.phases, "call": build_phase(
                "call", rows, call.units, call.catalog, with_examples=True)}))
            for key, rows in split.items()]


def place_of(finding: Finding) -> tuple[Any, ...]:
    """What makes two runs' findings the same mistake: rule, relation, statement, place."""
    evidence = finding.evidence
    sites = evidence.get("site") or tuple(evidence.get("sites", ())) or evidence.get("site_key")
    return (finding.rule, finding.phase, finding.action, evidence.get("relation"),
            evidence.get("fingerprint_id"), sites)


def _statements(run: TestRecord) -> set[tuple[str, str]]:
    """(fingerprint id, call site) of every statement one run of the body ran."""
    phase = run.phase("call")
    catalog = phase.catalog
    return {(catalog.shapes[shape_i].fingerprint_id, site_text(catalog, site_i))
            for shape_i, site_i in {(row[ROW_SHAPE], row[ROW_SITE]) for row in phase.rows}}


def _severity(finding: Finding) -> float:
    evidence = finding.evidence
    return float(evidence.get("ms", evidence.get("count", 0)))


def judge_thread_rounds(spec: RuleSpec, record: TestRecord, context: TestContext,
                        runs: list[Run]) -> list[Finding]:
    places: dict[tuple[Any, ...], list[tuple[tuple[int, int], Finding]]] = {}
    for key, run in runs:
        if not run.phase("call").rows:
            continue
        for finding in spec.check(run, context):
            places.setdefault(place_of(finding), []).append((key, finding))
    ran: list[set[tuple[str, str]]] = (
        [_statements(run) for _, run in runs] if spec.stress_every_run else [])
    findings = []
    for seen in places.values():
        if spec.stress_every_run:
            evidence = seen[0][1].evidence
            statement = (evidence.get("fingerprint_id"), evidence.get("site"))
            if len(seen) < sum(1 for statements in ran if statement in statements):
                continue  # fine in some run: the others waited for it (a lock, the database)
        # the worst run; among equals the first (earliest round, lowest thread)
        (rnd, thread), worst = max(seen, key=lambda s: (_severity(s[1]), -s[0][0], -s[0][1]))
        findings.append(_name_runs(worst, len(seen), len(runs), thread, rnd))
    return findings


def _name_runs(finding: Finding, count: int, of: int, thread: int, rnd: int) -> Finding:
    text = (f"under stress in {count} of {of} runs of the body, the worst in thread {thread} "
            f"of round {rnd}")
    evidence = dict(finding.evidence)
    evidence["lines"] = [*evidence.get("lines", ()), text]
    evidence["thread_rounds"] = {"count": count, "of": of,
                                 "worst": {"thread": thread, "round": rnd}}
    return replace(finding, message=f"{finding.message} ({text})", evidence=evidence)
