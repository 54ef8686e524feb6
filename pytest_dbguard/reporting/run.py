"""The end of a run as data: baseline judgement, run notes, and every report written from it.

The plugin (session.py) and `dbguard report` (cli.py) both finish a run through `conclude` and
`write_all`, so shards combined afterwards write the same bytes as one run over the whole suite.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .entries import RunResults

if TYPE_CHECKING:
    from ..config import Settings
    from ..rules.regression import Tolerance
    from .baseline import Baseline


@functools.cache
def plugin_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-dbguard")
    except PackageNotFoundError:
        return "0"


def run_meta(settings: Settings) -> dict[str, Any]:
    """What the JSON report says about the run: shards only combine when this agrees.

    Only settings that change findings or report text; paths, the rootdir and the stress seed
    legitimately differ between CI machines and shards.
    """
    baseline = None
    if settings.baseline is not None:
        baseline = {"mode": "update" if settings.baseline_update else "compare",
                    "tolerance": str(settings.baseline_tolerance)}
    return {"plugin_version": plugin_version(), "settings": {
        "enabled": settings.enabled,
        "actions": dict(sorted(settings.actions.items())),
        "max_queries": settings.max_queries,
        "max_connections": settings.max_connections,
        "show_params": settings.show_params,
        "nplusone_threshold": settings.nplusone_threshold,
        "slow_ms": settings.slow_ms,
        "query_timeout_ms": settings.query_timeout_ms,
        "explain": settings.explain,
        "readonly_aliases": list(settings.readonly_aliases),
        "stress_threads": settings.stress_threads,
        "stress_scope": settings.stress_scope,
        "stress_timeout": settings.stress_timeout,
        "lock_wait_ms": settings.lock_wait_ms,
        "baseline": baseline,
    }}


@dataclass(frozen=True)
class BaselineRequest:
    """A baseline to compare the run with, or to update from it."""

    path: str  # absolute: the notes name it
    baseline: Baseline
    tolerance: Tolerance
    update: bool = False
    prune: bool = False
    selected: set[str] | None = None
    # `dbguard report`: the shards ran without the baseline, so the regression rule is applied
    # to their entries here, with this action (the run's own rule did it otherwise)
    judge_action: str | None = None


@dataclass(frozen=True)
class Outputs:
    json: str | None = None
    md: str | None = None
    html: str | None = None
    sarif: str | None = None
    junitxml: str | None = None


def conclude(results: RunResults, request: BaselineRequest | None) -> Baseline | None:
    """Judge the run against the baseline and write the run notes; the new baseline on update."""
    from . import baseline as baseline_file

    new_baseline = None
    if request is not None:
        if request.update:
            new_baseline, results.baseline_update = baseline_file.updated(
                request.baseline, results.entries, results.sql, request.selected,
                request.prune)
        else:
            if request.judge_action is not None:
                from ..rules.regression import judge_entries

                judge_entries(results.entries, request.baseline.tests, request.tolerance,
                              request.judge_action, results.sql)
            results.comparison = baseline_file.compare(request.baseline, results.entries,
                                                       request.tolerance)
    results.notes = list(results.session_notes) + run_notes(
        results, request.path if request else None)
    return new_baseline


def run_notes(results: RunResults, baseline_path: str | None) -> list[str]:
    notes = []
    if results.crashed_workers:
        notes.append("xdist workers crashed: " + "; ".join(results.crashed_workers))
    if results.missing_records:
        shown = ", ".join(results.missing_records[:10])
        more = len(results.missing_records) - 10
        notes.append(f"no dbguard record for {len(results.missing_records)} tests (worker "
                     f"crash or internal error): {shown}" + (f" and {more} more"
                                                             if more > 0 else ""))
    comparison = results.comparison
    if comparison is not None:
        notes.append(
            f"baseline {baseline_path}: {len(comparison.regressions)} "
            f"regressions"
            + (f" ({len(comparison.allowed)} more allowed)" if comparison.allowed else "")
            + f", {len(comparison.within_tolerance)} within tolerance "
            f"{comparison.tolerance}, {len(comparison.improvements)} improved, "
            f"{len(comparison.new_tests)} new tests not in the baseline")
        if comparison.improvements:
            notes.append("tests now run fewer queries than the baseline: lock the gain in "
                         "with --dbguard-baseline-update")
    update = results.baseline_update
    if update is not None:
        notes.append(
            f"baseline {baseline_path} updated: {len(update.added)} added, "
            f"{len(update.changed)} changed, {len(update.pruned)} pruned")
        if update.not_updated:
            notes.append(f"{len(update.not_updated)} tests kept their old baseline entry "
                         f"because their body did not run to the end (skipped, failed "
                         f"with an exception, errored)")
    return notes


def write_all(results: RunResults, outputs: Outputs, new_baseline: Baseline | None = None,
              baseline_path: str | None = None) -> None:
    """Write every requested report; the baseline last, so a failing writer leaves it alone."""
    # imported here: a run that asks for no report never loads the writers
    from . import baseline as baseline_file
    from . import json_report

    if outputs.json:
        json_report.write(outputs.json, json_report.document(results))
    if outputs.md:
        from . import markdown

        markdown.write(outputs.md, results)
    if outputs.html:
        from . import html

        html.write(outputs.html, results)
    if outputs.sarif:
        from . import sarif

        sarif.write(outputs.sarif, results)
    if outputs.junitxml:
        from . import junit

        junit.write(outputs.junitxml, results)
    if new_baseline is not None and baseline_path is not None:
        baseline_file.write(baseline_path, new_baseline)


def failing(results: RunResults) -> bool:
    """What a CI gate fails on: a failing finding nobody allowed, or a baseline regression."""
    if results.comparison is not None and results.comparison.regressions:
        return True
    return any(f["action"] == "fail" and not f.get("allowed")
               for entry in results.entries for f in entry["findings"])
