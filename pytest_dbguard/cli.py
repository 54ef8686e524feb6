"""The `dbguard` command: combine CI shards' JSON reports, then report and gate on the whole run.

    dbguard combine shard-*.json -o merged.json
    dbguard report merged.json --md summary.md --sarif dbguard.sarif --baseline .dbguard.json

Exit codes CI can gate on: 0 clean, 1 failing findings or baseline regressions, 2 bad usage
(argparse), 4 unusable input (missing file, corrupt JSON, shards that do not belong together).
Everything after reading the JSON is the code a single run uses: reporting/run.py concludes the
run, `reporting.write_requested` writes every format of `reporting.FORMATS`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import reporting
from .reporting import json_report, run
from .reporting.entries import RunResults

CLEAN, FAILING, USAGE, BAD_INPUT = 0, 1, 2, 4


class InputError(Exception):
    """One line for the user: which file, what is wrong with it, what to do."""


def _read(path: str) -> tuple[str, Any]:
    label = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except FileNotFoundError:
        raise InputError(f"{label}: no such file; check the path or the artifact "
                         f"download step") from None
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory; give the JSON files inside it "
                         f"(or use --glob '{label}/*.json')") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InputError(f"{label}: cannot be read ({reason})") from None
    try:
        return label, json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}); was the shard interrupted while writing it?") from None


def _results(label: str, data: Any) -> RunResults:
    try:
        return json_report.results_from(data)
    except json_report.ReportError as exc:
        raise InputError(f"{label}: {exc}") from None


def combine(named: Sequence[tuple[str, Any]]) -> RunResults:
    """Fold shard reports into one run; InputError when they do not belong to one run."""
    if not named:
        raise InputError("no shard reports to combine")
    shards = [(label, _results(label, data)) for label, data in named]
    first_label, first = shards[0]
    merged = RunResults(entries=[], meta=dict(first.meta), rules=dict(first.rules))
    owner: dict[str, str] = {}
    for label, shard in shards:
        version, first_version = shard.meta["plugin_version"], first.meta["plugin_version"]
        if version != first_version:
            raise InputError(
                f"{first_label} was written by pytest-dbguard {first_version} but {label} by "
                f"{version}; run every shard with the same pytest-dbguard version")
        if shard.meta["settings"] != first.meta["settings"]:
            theirs, ours = shard.meta["settings"], first.meta["settings"]
            keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            raise InputError(
                f"{first_label} and {label} were run with different dbguard settings "
                f"({', '.join(keys)}); give every shard the same dbguard options")
        if shard.rules != first.rules:
            ids = sorted(set(shard.rules) ^ set(first.rules)) or sorted(
                k for k in shard.rules if shard.rules[k] != first.rules.get(k))
            raise InputError(
                f"{first_label} and {label} were run with different rules ({', '.join(ids)}); "
                f"register the same rules (pytest_dbguard_register_rules) in every shard")
        for entry in shard.entries:
            nodeid = entry["nodeid"]
            if nodeid in owner:
                raise InputError(
                    f"test {nodeid} is in both {owner[nodeid]} and {label}; each test must run "
                    f"in exactly one shard (check the split, or a report combined twice)")
            owner[nodeid] = label
            merged.entries.append(entry)
        merged.shared_fixture_queries += shard.shared_fixture_queries
        merged.sql.update(shard.sql)
        merged.missing_records.extend(shard.missing_records)
        merged.crashed_workers.extend(shard.crashed_workers)
        merged.session_notes.extend(n for n in shard.session_notes
                                    if n not in merged.session_notes)
    merged.entries.sort(key=lambda e: e["nodeid"])
    merged.missing_records.sort()
    return merged


def _inputs(args: argparse.Namespace) -> list[str]:
    paths = list(args.shards)
    for pattern in args.glob:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise InputError(f"--glob {pattern!r} matches no file; check the artifact "
                             f"download directory")
        paths.extend(matches)
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = path if path == "-" else os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _cmd_combine(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.shards and not args.glob:
        parser.error("give the shard JSON reports to combine (paths, '-' or --glob PATTERN)")
    merged = combine([_read(path) for path in _inputs(args)])
    text = json_report.dumps(json_report.document(merged))
    if args.output == "-":
        sys.stdout.write(text)
    else:
        reporting.write_atomic(args.output, text)
    return CLEAN


def _baseline_request(args: argparse.Namespace, results: RunResults) -> run.BaselineRequest:
    from . import baseline as baseline_file
    from .rules.regression import parse_tolerance

    try:
        tolerance = parse_tolerance(args.tolerance)
    except ValueError as exc:
        raise InputError(f"--tolerance: {exc}") from None
    path = os.path.abspath(args.baseline)
    try:
        if args.update and not os.path.exists(path):
            loaded = baseline_file.Baseline()
        else:
            loaded = baseline_file.load(path)
    except baseline_file.BaselineError as exc:
        problem = str(exc).replace("--dbguard-baseline-update", "dbguard report --update")
        fix = "" if "does not exist" in problem else "; fix or delete it, then rerun with --update"
        raise InputError(f"baseline file {args.baseline}: {problem}{fix}") from None
    settings = dict(results.meta.get("settings") or {})
    judge_action = None
    if settings.get("baseline") is None and not args.update:
        # the shards ran without the baseline: judge their tests here, as the run's rule would
        from .rules.regression import RULE_ID

        judge_action = (settings.get("actions") or {}).get(RULE_ID, "fail")
    if settings.get("baseline") is None:
        settings["baseline"] = {"mode": "update" if args.update else "compare",
                                "tolerance": str(tolerance)}
        results.meta = dict(results.meta, settings=settings)
    return run.BaselineRequest(path, loaded, tolerance, update=args.update,
                               judge_action=judge_action)


def _cmd_report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.baseline is None and (args.update or args.tolerance is not None):
        parser.error("--update and --tolerance need --baseline PATH to say which file to use")
    if args.tolerance is None:
        args.tolerance = "0"
    label, data = _read(args.report)
    results = _results(label, data)
    request = _baseline_request(args, results) if args.baseline is not None else None
    new_baseline = run.conclude(results, request)
    # the paths under the Settings attribute names the formats table reads
    paths = argparse.Namespace(**{f.setting: getattr(args, f.setting) for f in reporting.FORMATS})
    errors = reporting.write_requested(paths, results)
    if errors:
        # the other formats were written; the baseline waits for a run that wrote them all
        raise InputError(" ".join(e.removeprefix("dbguard: ") for e in errors))
    try:
        if new_baseline is not None and request is not None:
            from . import baseline as baseline_file

            baseline_file.write(request.path, new_baseline)  # last: a failing writer leaves it
    except OSError as exc:
        raise InputError(f"cannot write {exc.filename}: {exc.strerror}") from None
    from .reporting import terminal

    for line in terminal.summary_lines(results, 0):
        print(line)
    return FAILING if run.failing(results) else CLEAN


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbguard", description="Combine pytest-dbguard JSON reports from CI shards and "
        "render the whole run's reports and baseline verdict.")
    parser.add_argument("--version", action="version",
                        version=f"pytest-dbguard {run.plugin_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    combine_cmd = commands.add_parser(
        "combine", help="fold shard JSON reports (--dbguard-json) into one",
        description="Fold the --dbguard-json reports of CI shards into one report of the whole "
        "run. Shards must share the pytest-dbguard version and dbguard options, and each test "
        "must appear in one shard only.")
    combine_cmd.add_argument("shards", nargs="*", metavar="SHARD.json",
                             help="shard reports; '-' reads one from standard input")
    combine_cmd.add_argument("--glob", action="append", default=[], metavar="PATTERN",
                             help="add every file matching PATTERN (repeatable; ** recurses)")
    combine_cmd.add_argument("-o", "--output", required=True, metavar="PATH",
                             help="where to write the combined report; '-' for standard output")
    report_cmd = commands.add_parser(
        "report", help="render reports and the baseline verdict from a combined report",
        description="Render every report format from a (combined) JSON report and compare it "
        "with, or update, the query baseline. Exit code 1 on failing findings or regressions.")
    report_cmd.add_argument("report", metavar="MERGED.json",
                            help="a report from `dbguard combine` or --dbguard-json; '-' reads "
                                 "standard input")
    for report in reporting.FORMATS:
        report_cmd.add_argument(report.cli, dest=report.setting, metavar="PATH",
                                help=f"write {report.what}")
    report_cmd.add_argument("--baseline", metavar="PATH",
                            help="compare call-phase query counts with this baseline file")
    report_cmd.add_argument("--update", action="store_true",
                            help="write the whole run's counts into --baseline instead")
    report_cmd.add_argument("--tolerance", metavar="N|P%",
                            help="extra queries a test may run over its baseline (default 0)")
    return parser


COMMANDS = {"combine": _cmd_combine, "report": _cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args, parser)
    except InputError as exc:
        print(f"dbguard {args.command}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
