"""pytest hooks for dbguard: read options, create the session, delegate. Inert unless asked for."""

from __future__ import annotations

import copy
import traceback
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from . import config as dbguard_config
from . import hookspecs, markers
from .aliases import check_readonly_aliases
from .paths import check_separate_path_args
from .runstate import (
    SESSION,
    SETTINGS,
    SETTINGS_LOADER,
    TEST_STATE,
    current_session,
    settings_of,
    start_session,
)

if TYPE_CHECKING:  # session.py (recorder, rules, reports) loads only once dbguard is used
    from .fixture import DbguardFixture
    from .rules.api import Registrar
    from .session import DbguardSession

__all__ = ["SESSION", "SETTINGS", "TEST_STATE", "start_session"]
_session = current_session
# a marker that does not fit its signature: the test fails once, in its call phase
MARKER_ERROR = pytest.StashKey[str]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    dbguard_config.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_dbguard_register_rules(register: Registrar) -> None:
    """The built-in rules come first, through the same hook a project's rules use."""
    from .rules import builtin_specs

    for spec in builtin_specs():
        register.spec(spec)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser,
                                  args: list[str]) -> None:
    if dbguard_config.rewrite_bare_stress_flag(args):
        # pytest already parsed these arguments once with our option swallowing the path;
        # conftest discovery reads that parse, so it must see the path as a path too
        early_config.known_args_namespace = parser.parse_known_args(
            args, namespace=copy.copy(early_config.option))
    check_separate_path_args(early_config, args)


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    markers.register(config)
    config.pluginmanager.register(ReportCollector(config), "dbguard-report-collector")
    if config.pluginmanager.hasplugin("xdist"):
        from .xdist import XdistBridge

        config.pluginmanager.register(XdistBridge(config), "dbguard-xdist")
    if not dbguard_config.asks_for_dbguard(config) and not _project_registers_rules(config):
        # an idle install: nothing to check now, and no rule imported unless a test uses a
        # dbguard marker or the fixture (see runstate.settings_of)
        config.stash[SETTINGS_LOADER] = lambda: dbguard_config.load_settings(
            config, _registered_rules(config))
        return
    settings = dbguard_config.load_settings(config, _registered_rules(config))
    config.stash[SETTINGS] = settings
    readonly_checked = check_readonly_aliases(settings.rule_options.get("readonly_aliases", ()))
    if settings.needs_session_now:
        start_session(config).readonly_checked = readonly_checked


def _project_registers_rules(config: pytest.Config) -> bool:
    """A project's own rules are registered (and their errors raised) before any test runs."""
    return any(impl.function is not pytest_dbguard_register_rules
               for impl in config.hook.pytest_dbguard_register_rules.get_hookimpls())


def _registered_rules(config: pytest.Config) -> Any:
    from .rules import RuleError, RuleRegistry
    from .rules.api import Registrar

    registry = RuleRegistry()
    try:
        config.hook.pytest_dbguard_register_rules(register=Registrar(registry))
    except RuleError as exc:
        raise pytest.UsageError(f"dbguard: cannot register a rule: {exc}.") from None
    return registry


def _session_for(item: pytest.Item) -> DbguardSession | None:
    session = _session(item.config)
    if session is None and (
            "dbguard" in getattr(item, "fixturenames", ())
            or any(item.get_closest_marker(name) for name in markers.RECORDING_MARKERS)
    ) and settings_of(item.config) is not None:
        session = start_session(item.config)
    return session


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    session = _session(config)
    if session is None:
        return None
    settings = session.settings
    lines = []
    if settings.enabled:
        explicit = ", ".join(f"{k}={v}" for k, v in sorted(settings.actions.items()))
        lines.append("dbguard: on" + (f" ({explicit})" if explicit else ""))
    if settings.stress:
        threads = settings.stress_threads or "per marker"
        timeout = f"{settings.stress_timeout:g} s" if settings.stress_timeout else "per marker"
        lines.append(f"dbguard stress: threads={threads}, rounds=per marker, "
                     f"timeout={timeout}, scope={settings.stress_scope}, "
                     f"lock-wait={settings.rule_options['lock_wait_ms']} ms, "
                     f"seed={settings.stress_seed} "
                     f"(repeat with --dbguard-stress-seed={settings.stress_seed})")
    return lines or None


def pytest_collection_finish(session: pytest.Session) -> None:
    dbguard = _session(session.config)
    if dbguard is not None:
        dbguard.note_selected([item.nodeid for item in session.items])


# -- per test: record each phase, judge, report ---------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
    session = _session_for(item)
    state = None
    if session is not None:
        try:
            state = session.begin_test(item)
        except markers.MarkerError as exc:
            item.stash[MARKER_ERROR] = str(exc)
    item.stash[TEST_STATE] = state
    recorder = state.recorder if state is not None else None
    if recorder is None:
        return (yield)
    recorder.start_phase("setup")
    try:
        return (yield)
    finally:
        recorder.stop_phase()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    marker_error = item.stash.get(MARKER_ERROR, None)
    if marker_error is not None:
        pytest.fail(marker_error, pytrace=False)
    state = item.stash.get(TEST_STATE, None)
    if state is None or state.recorder is None:
        return (yield)
    session = state.session
    assert session is not None
    begun = session.begin_call(state)
    try:
        return (yield)
    except BaseException as exc:
        session.note_call_error(state, exc)
        raise
    finally:
        session.end_call(state, begun)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Under --dbguard-stress, run the test body in threads instead of once."""
    state = pyfuncitem.stash.get(TEST_STATE, None)
    if state is None or state.stress is None:
        return None
    session = state.session
    assert session is not None
    session.run_stress(pyfuncitem, state)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Generator[None, Any, Any]:
    state = item.stash.get(TEST_STATE, None)
    recorder = state.recorder if state is not None else None
    if recorder is None:
        return (yield)
    recorder.start_phase("teardown")
    try:
        return (yield)
    finally:
        recorder.stop_phase()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    state = item.stash.get(TEST_STATE, None)
    if state is None or state.recorder is None:
        return (yield)
    session = state.session
    assert session is not None
    entry = None
    found: list[Any] = []
    try:
        if call.when == "call":
            state.call_completed = call.excinfo is None
        if call.when in ("call", "teardown"):
            found = session.judge(state, stage=call.when, excinfo=call.excinfo)
        if call.when == "teardown":
            entry = session.finish_test(item, state)
            # pytest keeps every item to the end of the run: a state left in its stash would
            # keep the test's rows, phase records and facts alive for the whole session
            item.stash[TEST_STATE] = None
            for phase, count in entry["queries"].items():
                item.user_properties.append((f"dbguard_queries_{phase}", count))
            rules = sorted({f["rule"] for f in entry["findings"] if not f.get("allowed")})
            if rules:
                item.user_properties.append(("dbguard_findings", ",".join(rules)))
    except Exception:
        session.internal_errors.append(f"{item.nodeid} ({call.when}):\n{traceback.format_exc()}")
        found, entry = [], None
    report: pytest.TestReport = yield
    failing = [f for f in found if f.action == "fail" and not f.allowed_reason]
    if failing and not hasattr(report, "wasxfail"):
        from .session import failure_text

        text = failure_text(failing)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("dbguard findings", text))
    if entry is not None:
        report.dbguard_entry = entry  # type: ignore[attr-defined]
        # the process's running total of shared-fixture queries (see results.py)
        report.dbguard_shared_queries = session.shared_fixture_queries  # type: ignore[attr-defined]
    return report


class ReportCollector:
    """Registered per run: pytest_runtest_logreport carries no config, so the hook needs `self`.

    On an xdist controller this is where workers' per-test entries arrive, inside their reports
    (the controller runs no test, so an entry is what wakes its session up).
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        session = _session(self.config)
        if session is None and getattr(report, "dbguard_entry", None) is not None:
            session = start_session(self.config)
        if session is not None:
            session.collect_report(report)


@pytest.fixture
def dbguard(request: pytest.FixtureRequest) -> DbguardFixture:
    """Live access to the queries this test ran: .queries, .count(), .budget(n), .findings."""
    session = _session(request.config)
    state = request.node.stash.get(TEST_STATE, None)
    if session is None or state is None or state.recorder is None:
        from .recording.assembly import DJANGO_NOT_CONFIGURED

        pytest.fail(DJANGO_NOT_CONFIGURED, pytrace=False)
    from .fixture import DbguardFixture

    return DbguardFixture(state)


# -- end of run --------------------------------------------------------------------------------

def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config
                            ) -> None:
    session = _session(config)
    if session is None or (not session.entries and not session.settings.enabled
                           and not session.internal_errors):
        return
    verbosity = config.get_verbosity()
    if config.getoption("dbguard_verbose", False):
        verbosity = max(verbosity, 1)
    lines = session.terminal_lines(verbosity)
    if verbosity < 0:
        terminalreporter.write_line(lines[0])
    else:
        terminalreporter.section("dbguard")
        for line in lines:
            terminalreporter.write_line(line)
    for error in session.internal_errors:
        terminalreporter.write_line(f"INTERNAL ERROR in pytest-dbguard: {error}", red=True)
    for error in session.run.report_errors:
        terminalreporter.write_line(f"ERROR {error}", red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    dbguard = _session(session.config)
    if dbguard is None:
        return
    try:
        dbguard.close()
    except Exception:
        dbguard.internal_errors.append(traceback.format_exc())
    if hasattr(session.config, "workerinput"):
        return  # xdist worker: the controller writes the reports
    # Ctrl-C: the reports say so, and the baseline is left as it was
    dbguard.run.interrupted = interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    try:
        dbguard.write_reports()
    except Exception:
        dbguard.internal_errors.append(traceback.format_exc())
    if interrupted:
        return
    if dbguard.run.report_errors and session.exitstatus in (pytest.ExitCode.OK,
                                                        pytest.ExitCode.TESTS_FAILED):
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR  # README: a plugin failure is 3
    if dbguard.internal_errors and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
