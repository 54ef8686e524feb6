"""Command-line options and ini keys, validated once into a frozen Settings object."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from . import defaults, paths

if TYPE_CHECKING:
    from . import baseline as baseline_file  # loaded only when a baseline option is given
    from .rules import RuleRegistry  # loaded once a run uses dbguard (every rule module)
    from .rules.regression import Tolerance


GROUP = "dbguard"
# dest -> default of every command-line option add_options adds (asks_for_dbguard reads it)
_OPTION_DEFAULTS: dict[str, Any] = {}


def add_options(parser: pytest.Parser) -> None:
    # quoted from defaults.py, which the rules declare their options with: every run of a
    # project with dbguard installed adds these options, and must not import the rules for it
    group = parser.getgroup(GROUP, "pytest-dbguard: database anti-pattern checks")

    def add(name: str, **kwargs: Any) -> None:
        _OPTION_DEFAULTS[name[2:].replace("-", "_")] = kwargs.get("default")
        group.addoption(name, **kwargs)

    add("--dbguard", action="store_true", default=None,
        help="Turn on dbguard's suite-wide rules for every test (ini: dbguard = true).")
    add("--dbguard-rule", action="append", default=[], metavar="ID=ACTION",
        help="Set a rule's action: fail, warn or off. Repeatable; beats the ini "
             "key dbguard_rules.")
    add("--dbguard-max-queries", type=int, default=None, metavar="N",
        help="With --dbguard: fail any test whose call phase runs more than N "
             "queries (a query_budget marker on the test wins).")
    add("--dbguard-max-connections", type=int, default=None, metavar="N",
        help="With --dbguard: report pool-exhausted when more than N database "
             "connections are open at once during a test.")
    add("--dbguard-json", default=None, metavar="PATH",
        help="Write the per-test report as JSON (schema pytest-dbguard/1).")
    add("--dbguard-verbose", action="store_true", default=False,
        help="List every warning in the terminal summary (as -v does); by "
             "default it shows the top few per rule.")
    add("--dbguard-show-params", action="store_true", default=False,
        help="Keep query parameters and raw SQL in reports (redacted by default).")
    add("--dbguard-baseline", default=None, metavar="PATH",
        help="Compare each test's call-phase queries with this baseline file "
             "(schema pytest-dbguard-baseline/1); growth fails under rule "
             "regression. Records every test.")
    add("--dbguard-baseline-update", action="store_true", default=False,
        help="Write this run's counts into the --dbguard-baseline file instead of "
             "comparing (tests not run keep their entries).")
    add("--dbguard-baseline-tolerance", default="0", metavar="N|P%",
        help="Extra call-phase queries a test may run over its baseline: N queries "
             "or P percent of the baseline count (default 0).")
    add("--dbguard-baseline-prune", action="store_true", default=False,
        help="With --dbguard-baseline-update: drop entries of tests this run did "
             "not select (use with a full run).")
    add("--dbguard-md", default=None, metavar="PATH",
        help="Write a Markdown summary (works with $GITHUB_STEP_SUMMARY).")
    add("--dbguard-html", default=None, metavar="PATH",
        help="Write a self-contained HTML report (sortable table, charts).")
    add("--dbguard-sarif", default=None, metavar="PATH",
        help="Write findings as SARIF 2.1.0 for code scanning.")
    add("--dbguard-nplusone-threshold", type=int, default=None, metavar="N",
        help="Repeats of one query shape in one unit of work (the test body or one "
             "request) that make an N+1, a loop or a duplicate (default "
             f"{defaults.NPLUSONE_THRESHOLD}).")
    add("--dbguard-slow-ms", type=float, default=None, metavar="MS",
        help="slow-query: report any query taking at least MS milliseconds "
             f"(default {defaults.SLOW_MS:g}).")
    add("--dbguard-query-timeout-ms", type=int, default=None, metavar="MS",
        help="Cancel any query of a test running longer than MS milliseconds "
             "(PostgreSQL statement_timeout and lock_timeout, SQLite progress "
             "handler); a query_timeout marker on the test wins.")
    add("--dbguard-explain", action="store_true", default=False,
        help="PostgreSQL: EXPLAIN each distinct query shape once per session and "
             "report sequential scans with a filter (turns on missing-index).")
    add("--dbguard-readonly-alias", action="append", default=[], metavar="ALIAS",
        help="A database alias that must never be written to (replica-write; "
             "repeatable, turns the rule on).")
    add("--dbguard-stress", nargs="?", const="", default=None, metavar="N",
        help="Run stress-marked tests' bodies in parallel threads (N overrides the "
             "marker's thread count). Write --dbguard-stress=N when a path follows.")
    add("--dbguard-stress-scope", choices=STRESS_SCOPES, default="marked",
        help="marked: only @pytest.mark.stress tests (default); all: also every "
             "transactional database test.")
    add("--dbguard-stress-timeout", type=float, default=None, metavar="S",
        help="Seconds a stress round may take before it is cancelled as a hang "
             "(overrides the marker's timeout).")
    add("--dbguard-stress-seed", type=int, default=None, metavar="SEED",
        help="Repeat a stress run: the seed printed in the header.")
    add("--dbguard-lock-wait-ms", type=int, default=None, metavar="MS",
        help="lock-wait rule: a statement blocked this long by another thread is "
             f"reported (default {defaults.LOCK_WAIT_MS}).")
    parser.addini("dbguard", type="bool", default=False,
                  help="Turn on dbguard's suite-wide rules (same as --dbguard).")
    parser.addini("dbguard_rules", type="linelist", default=[],
                  help="ID=ACTION settings of rule actions (fail, warn, off), one per line "
                       "or separated by commas; custom rules too.")
    paths.add_inis(parser)


def asks_for_dbguard(config: pytest.Config) -> bool:
    """Whether the command line or the ini file sets anything of dbguard's.

    A run that sets nothing (a project with dbguard installed, not using it) has nothing to
    check before its tests start: its settings are worked out when a test first uses a dbguard
    marker or the fixture, so that such a run imports no rule.
    """
    for dest, default in _OPTION_DEFAULTS.items():
        if config.getoption(dest, default) != default:
            return True
    return (_ini_flag(config, "dbguard") or bool(config.getini("dbguard_rules"))
            or any(str(config.getini(ini) or "").strip()
                   for ini, _ in paths.PATH_OPTIONS.values()))


STRESS_SCOPES = ("marked", "all")
# The controller picks the seed; xdist workers are spawned later and inherit it through here.
STRESS_SEED_ENV = "PYTEST_DBGUARD_STRESS_SEED"


@dataclass(frozen=True)
class Settings:
    enabled: bool = False
    # the run's rules (built-in and registered by the project) and explicit actions by rule id
    rules: RuleRegistry = field(default_factory=lambda: _builtin_registry())
    actions: dict[str, str] = field(default_factory=dict)
    # every rule option (RuleOption.name -> value), defaults from the rules' declarations
    rule_options: dict[str, Any] = field(default_factory=dict)
    max_queries: int | None = None
    show_params: bool = False
    rootdir: str = "."
    # reports
    json_path: str | None = None
    md_path: str | None = None
    html_path: str | None = None
    sarif_path: str | None = None
    # baseline: the loaded file (compare mode, or the entries an update merges into)
    baseline_path: str | None = None
    baseline: baseline_file.Baseline | None = None
    baseline_update: bool = False
    baseline_prune: bool = False
    baseline_tolerance: Tolerance | None = None  # set whenever baseline_path is
    query_timeout_ms: int | None = None
    # stress mode: None = off; 0 = each marker's own thread count; N = N threads
    stress_threads: int | None = None
    stress_scope: str = "marked"
    stress_timeout: float | None = None
    stress_seed: int = 0

    @property
    def compares_baseline(self) -> bool:
        return self.baseline is not None and not self.baseline_update

    @property
    def stress(self) -> bool:
        return self.stress_threads is not None

    @property
    def entries_need_statements(self) -> bool:
        """Whether each test's report entry carries its call phase's statements: the report
        files and the baseline read them; the terminal summary does not."""
        return bool(self.json_path or self.md_path or self.html_path or self.sarif_path
                    or self.baseline_path)

    @property
    def needs_session_now(self) -> bool:
        """Whether this run asked for dbguard as a whole (else it wakes up on the first test
        that uses a dbguard marker or the fixture, and an idle install costs nothing)."""
        return bool(self.enabled or self.json_path or self.md_path or self.html_path
                    or self.sarif_path or self.baseline_path or self.stress
                    or self.query_timeout_ms)


def _builtin_registry() -> RuleRegistry:
    from .rules import builtin_registry

    return builtin_registry()


def _parse_rule_lines(lines: list[str], source: str, rules: RuleRegistry) -> dict[str, str]:
    if not lines:
        return {}
    from .rules import ACTIONS

    actions: dict[str, str] = {}
    valid_ids = ", ".join(rules.ids())
    # one per line, or several on a line separated by commas (`nplusone=warn, budget=off`)
    items = [part for line in lines if not line.strip().startswith("#")
             for part in line.split(",")]
    for raw in items:
        line = raw.strip()
        if not line:
            continue
        rule_id, sep, action = (part.strip() for part in line.partition("="))
        if not sep or not rule_id or not action:
            raise pytest.UsageError(
                f"dbguard: {source} expects ID=ACTION, got {raw!r}. "
                f"Example: nplusone=warn. Rule ids: {valid_ids}."
            )
        if rule_id not in rules:
            raise pytest.UsageError(
                f"dbguard: unknown rule id {rule_id!r} in {source}. Valid rule ids: {valid_ids}."
            )
        if action not in ACTIONS:
            raise pytest.UsageError(
                f"dbguard: unknown action {action!r} for rule {rule_id!r} in {source}. "
                f"Valid actions: {', '.join(ACTIONS)}."
            )
        actions[rule_id] = action
    return actions


def check_writable(path: str, option: str) -> str:
    """Fail before any test runs if a report could not be written at the end."""
    from .reporting import probe_writable

    absolute = os.path.abspath(path)
    if os.path.isdir(absolute):
        raise pytest.UsageError(f"dbguard: {option} {path!r} is a directory; give a file path.")
    problem = probe_writable(absolute)
    if problem is not None:
        raise pytest.UsageError(f"dbguard: cannot write {option} {path!r}: {problem}.")
    return absolute


def _non_negative(value: Any, option: str) -> int | None:
    if value is None:
        return None
    if value < 0:
        raise pytest.UsageError(f"dbguard: {option} must be 0 or more, got {value}.")
    return int(value)


def _load_baseline(config: pytest.Config) -> dict[str, Any]:
    """Baseline options, checked before any test runs: a bad file is a UsageError naming it."""
    path, source = paths.path_value(config, "--dbguard-baseline")
    update = bool(config.getoption("dbguard_baseline_update"))
    prune = bool(config.getoption("dbguard_baseline_prune"))
    tolerance_text = config.getoption("dbguard_baseline_tolerance")
    if not path and not update and not prune and tolerance_text in (None, "0"):
        return {}  # the common case: no baseline, nothing to import
    from . import baseline as baseline_file
    from .rules.regression import Tolerance, parse_tolerance

    try:
        tolerance = parse_tolerance(tolerance_text)
    except ValueError as exc:
        raise pytest.UsageError(f"dbguard: --dbguard-baseline-tolerance: {exc}.") from None
    if not path:
        for flag, given in (("--dbguard-baseline-update", update),
                            ("--dbguard-baseline-prune", prune),
                            ("--dbguard-baseline-tolerance", tolerance != Tolerance())):
            if given:
                raise pytest.UsageError(
                    f"dbguard: {flag} needs --dbguard-baseline PATH to say which file to use.")
        return {}
    if prune and not update:
        raise pytest.UsageError("dbguard: --dbguard-baseline-prune only applies with "
                                "--dbguard-baseline-update; add it or drop the prune flag.")
    absolute = os.path.abspath(path)
    if update:
        check_writable(path, source)
    loaded: baseline_file.Baseline | None
    if update and not os.path.exists(absolute):
        loaded = baseline_file.Baseline()
    else:
        try:
            loaded = baseline_file.load(absolute)
        except baseline_file.BaselineError as exc:
            fix = (" Fix or delete it, then rerun with --dbguard-baseline-update."
                   if "does not exist" not in str(exc) else "")
            raise pytest.UsageError(f"dbguard: baseline file {path!r} {exc}.{fix}") from None
    return {"baseline_path": absolute, "baseline": loaded, "baseline_update": update,
            "baseline_prune": prune, "baseline_tolerance": tolerance}


def rewrite_bare_stress_flag(args: list[str]) -> bool:
    """`--dbguard-stress tests/` must not read `tests/` as the thread count.

    argparse gives an optional value to the next word whatever it is; a bare flag followed by
    something that is not a number is rewritten to `--dbguard-stress=` (no N) before parsing.
    """
    rewritten = False
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--dbguard-stress" and i + 1 < len(args):
            following = args[i + 1]
            if not following.startswith("-") and not following.strip().isdigit():
                args[i] = "--dbguard-stress="
                rewritten = True
    return rewritten


def _stress_threads(value: str | None) -> int | None:
    if value is None:
        return None
    if value == "":
        return 0
    try:
        threads = int(value)
    except ValueError:
        raise pytest.UsageError(
            f"dbguard: --dbguard-stress expects a number of threads, got {value!r}. "
            "Write --dbguard-stress (threads from each stress marker) or --dbguard-stress=N."
        ) from None
    if threads < 1:
        raise pytest.UsageError(f"dbguard: --dbguard-stress=N needs N of 1 or more, got {threads}.")
    return threads


def _stress_seed(config: pytest.Config) -> int:
    seed = config.getoption("dbguard_stress_seed")
    if seed is not None:
        return int(seed)
    inherited = os.environ.get(STRESS_SEED_ENV, "")
    if inherited.isdigit():
        return int(inherited)
    seed = random.SystemRandom().randrange(1, 10**8)
    os.environ[STRESS_SEED_ENV] = str(seed)
    return seed


def load_settings(config: pytest.Config, rules: RuleRegistry | None = None) -> Settings:
    rules = rules if rules is not None else _builtin_registry()
    enabled = config.getoption("dbguard")
    if enabled is None:
        enabled = _ini_flag(config, "dbguard")
    actions = _parse_rule_lines(list(config.getini("dbguard_rules")), "ini dbguard_rules", rules)
    actions.update(_parse_rule_lines(list(config.getoption("dbguard_rule")), "--dbguard-rule",
                                     rules))
    reports, outputs = _report_paths(config)
    threshold = config.getoption("dbguard_nplusone_threshold")
    if threshold is not None and threshold < 2:
        raise pytest.UsageError(
            f"dbguard: --dbguard-nplusone-threshold must be 2 or more, got {threshold}."
        )
    slow_ms = config.getoption("dbguard_slow_ms")
    if slow_ms is not None and slow_ms <= 0:
        raise pytest.UsageError(f"dbguard: --dbguard-slow-ms must be more than 0, got {slow_ms}.")
    timeout_ms = config.getoption("dbguard_query_timeout_ms")
    if timeout_ms is not None and timeout_ms <= 0:
        raise pytest.UsageError(
            f"dbguard: --dbguard-query-timeout-ms must be more than 0, got {timeout_ms}."
        )
    readonly = tuple(dict.fromkeys(a.strip() for a in config.getoption("dbguard_readonly_alias")))
    if "" in readonly:
        raise pytest.UsageError("dbguard: --dbguard-readonly-alias needs an alias name.")
    rule_options = rules.option_defaults()
    given = {
        "nplusone_threshold": threshold,
        "slow_ms": float(slow_ms) if slow_ms is not None else None,
        "readonly_aliases": readonly,
        "explain": bool(config.getoption("dbguard_explain")),
        "max_connections": _non_negative(config.getoption("dbguard_max_connections"),
                                         "--dbguard-max-connections"),
        "lock_wait_ms": _non_negative(config.getoption("dbguard_lock_wait_ms"),
                                      "--dbguard-lock-wait-ms"),
    }
    rule_options.update({name: value for name, value in given.items() if value is not None})
    baseline = _load_baseline(config)
    if baseline.get("baseline_path"):
        outputs["--dbguard-baseline"] = baseline["baseline_path"]
    paths.check_distinct(outputs)
    stress = _stress_settings(config)
    if baseline.get("baseline_update") and stress["stress_threads"] is not None:
        # a stressed body runs threads x rounds times: its counts are not the test's
        raise pytest.UsageError(
            "dbguard: --dbguard-baseline-update cannot be combined with --dbguard-stress: "
            "stressed tests run their body threads x rounds times, so their query counts are "
            "not a baseline. Update the baseline in a run without --dbguard-stress.")
    return Settings(
        query_timeout_ms=timeout_ms,
        enabled=bool(enabled),
        rules=rules,
        actions=actions,
        rule_options=rule_options,
        max_queries=_non_negative(config.getoption("dbguard_max_queries"),
                                  "--dbguard-max-queries"),
        show_params=bool(config.getoption("dbguard_show_params")),
        rootdir=str(config.rootpath),
        **reports,
        **baseline,
        **stress,
    )


def _ini_flag(config: pytest.Config, key: str) -> bool:
    try:
        return bool(config.getini(key))
    except (ValueError, pytest.UsageError) as exc:  # pytest 9 raises UsageError itself
        raise pytest.UsageError(f"dbguard: ini key {key}: {exc}; write {key} = true or "
                                f"{key} = false.") from None


def _report_paths(config: pytest.Config) -> tuple[dict[str, Any], dict[str, str]]:
    """Report paths by Settings field, each checked writable; and by option, for clashes."""
    reports: dict[str, Any] = {}
    outputs: dict[str, str] = {}
    for key, option in (("json_path", "--dbguard-json"), ("md_path", "--dbguard-md"),
                        ("html_path", "--dbguard-html"), ("sarif_path", "--dbguard-sarif")):
        value, source = paths.path_value(config, option)
        if value is not None:
            reports[key] = outputs[source] = check_writable(value, source)
    return reports, outputs


def _stress_settings(config: pytest.Config) -> dict[str, Any]:
    threads = _stress_threads(config.getoption("dbguard_stress"))
    timeout = config.getoption("dbguard_stress_timeout")
    if timeout is not None and not timeout > 0:
        raise pytest.UsageError(
            f"dbguard: --dbguard-stress-timeout must be more than 0 seconds, got {timeout}.")
    return {
        "stress_threads": threads,
        "stress_scope": config.getoption("dbguard_stress_scope"),
        "stress_timeout": timeout,
        "stress_seed": _stress_seed(config) if threads is not None else 0,
    }
