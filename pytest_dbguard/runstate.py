"""The run's dbguard objects in config.stash: settings, the session made on first need, tests."""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

from .config import Settings

if TYPE_CHECKING:  # session.py (recorder, rules, reports) loads only once dbguard is used
    from .session import DbguardSession, TestState  # noqa: F401

SETTINGS = pytest.StashKey[Settings]()
# how to work the settings out on first need, for a run that set none of dbguard's options
SETTINGS_LOADER = pytest.StashKey[Callable[[], Settings]]()
SESSION = pytest.StashKey["DbguardSession"]()
TEST_STATE = pytest.StashKey["TestState | None"]()


def start_session(config: pytest.Config) -> DbguardSession:
    """The run's DbguardSession, created on first need: an idle install imports none of it."""
    session = config.stash.get(SESSION, None)
    if session is None:
        from .session import DbguardSession

        settings = settings_of(config)
        assert settings is not None, "dbguard's pytest_configure has not run"
        session = config.stash[SESSION] = DbguardSession(config, settings)
        _charge_shared_fixtures(config, session)
    return session


def settings_of(config: pytest.Config) -> Settings | None:
    """The run's settings (worked out now if they were left for first need); None before
    dbguard's pytest_configure."""
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        load = config.stash.get(SETTINGS_LOADER, None)
        if load is None:
            return None
        settings = config.stash[SETTINGS] = load()
    return settings


def current_session(config: pytest.Config) -> DbguardSession | None:
    return config.stash.get(SESSION, None)


def _charge_shared_fixtures(config: pytest.Config, session: DbguardSession) -> None:
    """Charge session/module/class-scoped fixtures to the session, not to a test.

    pytest runs a fixture through FixtureDef.execute (set-up, or the cached value) and
    FixtureDef.finish (teardown). Wrapping those two for the run costs a plain call and a
    scope check per fixture; the pytest_fixture_setup/post_finalizer hooks that did this before
    cost a hook wrapper for each of the ~30 fixture calls of every test. Where FixtureDef lacks
    either method (another pytest), the hooks do it. Undone when the run ends.
    """
    execute = getattr(pytest.FixtureDef, "execute", None)
    finish = getattr(pytest.FixtureDef, "finish", None)
    if not callable(execute) or not callable(finish):
        config.pluginmanager.register(SharedFixtureHooks(session), "dbguard-shared-fixtures")
        return

    # definitions seen so far, by scope: FixtureDef.scope is a property over an enum (three
    # Python calls), and these wrappers run for every fixture call of every test
    per_test: set[pytest.FixtureDef[Any]] = set()
    shared: set[pytest.FixtureDef[Any]] = set()

    def is_shared(fixturedef: pytest.FixtureDef[Any]) -> bool:
        if fixturedef.scope == "function":
            per_test.add(fixturedef)
            return False
        shared.add(fixturedef)
        return True

    def shared_execute(fixturedef: pytest.FixtureDef[Any], request: Any) -> Any:
        # called for every fixture a test uses, set up or cached: as cheap as it can be
        if fixturedef in per_test or (fixturedef not in shared and not is_shared(fixturedef)):
            return execute(fixturedef, request)
        hub = session.hub
        if hub is None or hub.rows is None or hub.rows is hub.shared_rows:
            return execute(fixturedef, request)
        previous = hub.enter_shared()
        try:
            return execute(fixturedef, request)
        finally:
            hub.leave_shared(previous)

    def shared_finish(fixturedef: pytest.FixtureDef[Any], request: Any) -> None:
        if (fixturedef in per_test or fixturedef.cached_result is None
                or (fixturedef not in shared and not is_shared(fixturedef))):
            return finish(fixturedef, request)
        key = id(fixturedef)
        session.begin_shared_teardown(key)
        try:
            return finish(fixturedef, request)
        finally:
            session.end_shared_teardown(key)

    fixturedef_class: Any = pytest.FixtureDef
    fixturedef_class.execute = shared_execute
    fixturedef_class.finish = shared_finish

    def undo() -> None:
        fixturedef_class.execute = execute
        fixturedef_class.finish = finish

    config.add_cleanup(undo)


class SharedFixtureHooks:
    """The hook-based way of _charge_shared_fixtures, for a pytest whose FixtureDef differs.

    Registered when the session starts: fixture hooks run ~30 times per test, and an idle
    install must not add even that.
    """

    def __init__(self, session: DbguardSession) -> None:
        self.session = session
        # function-scoped fixture definitions seen so far: FixtureDef.scope goes through an
        # enum property, and these hooks run for every fixture of every test
        self._per_test: set[pytest.FixtureDef[Any]] = set()

    def _function_scoped(self, fixturedef: pytest.FixtureDef[Any]) -> bool:
        if fixturedef.scope == "function":
            self._per_test.add(fixturedef)
            return True
        return False

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef[Any], request: Any
                             ) -> Generator[None, Any, Any]:
        if fixturedef in self._per_test or self._function_scoped(fixturedef):
            return (yield)
        session = self.session
        with session.shared_fixture():
            result = yield
        # Finalizers run last-in first-out: this one runs just before the fixture's own
        # teardown, and pytest_fixture_post_finalizer just after it, so its teardown queries
        # are shared too.
        fixturedef.addfinalizer(functools.partial(session.begin_shared_teardown,
                                                  id(fixturedef)))
        return result

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[Any],
                                      request: pytest.FixtureRequest) -> None:
        if fixturedef not in self._per_test and not self._function_scoped(fixturedef):
            self.session.end_shared_teardown(id(fixturedef))
