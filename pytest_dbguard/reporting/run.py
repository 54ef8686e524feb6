"""The end of a run as data: what the JSON report says about the run, baseline verdict, notes.

The plugin (results.py) and `dbguard report` (cli.py) both finish a run through `conclude` and
write it with `reporting.write_requested`, so shards combined afterwards write the same bytes as
one run over the whole suite.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .entries import RunResults

if TYPE_CHECKING:
    from ..baseline import Baseline
    from ..config import Settings
    from ..rules.regression import Tolerance


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
    described: dict[str, Any] = {
        "enabled": settings.enabled,
        "actions": dict(sorted(settings.actions.items())),
        "max_queries": settings.max_queries,
        "show_params": settings.show_params,
        "query_timeout_ms": settings.query_timeout_ms,
        "stress_threads": settings.stress_threads,
        "stress_scope": settings.stress_scope,
        "stress_timeout": settings.stress_timeout,
        "baseline": baseline,
    }
    # every rule option, built-in or a project's rule's, under its own name
    for name, value in sorted(settings.rule_options.items()):
        described[name] = sorted(value) if isinstance(value, (set, frozenset)) else (
            list(value) if isinstance(value, tuple) else value)
    return {"plugin_version": plugin_version(), "settings": described}


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


def conclude(results: RunResults, request: BaselineRequest | None) -> Baseline | None:
    """Judge the run against the baseline and write the run notes; the new baseline on update."""
    new_baseline = None
    if request is not None:
        from .. import baseline as baseline_file

        if request.update:
            new_baseline, results.baseline_update = baseline_file.updated(
                request.baseline, results.entries, results.sql, request.selected,
                request.prune)
        else:
            if request.judge_action is not None:
                from ..rules.known import mark_known_entries
                from ..rules.regression import judge_entries

                # known findings first: a regression is never baselined and fails on its own
                mark_known_entries(cast("list[dict[str, Any]]", results.entries),
                                   request.baseline.tests)
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


def failing(results: RunResults) -> bool:
    """What a CI gate fails on: a failing finding nobody allowed, or a baseline regression."""
    if results.comparison is not None and results.comparison.regressions:
        return True
    return any(f["action"] == "fail" and not f.get("allowed")
               for entry in results.entries for f in entry["findings"])
