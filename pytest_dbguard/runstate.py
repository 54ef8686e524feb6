"""The run's dbguard objects in config.stash: settings, the session made on first need, tests."""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from .config import Settings

if TYPE_CHECKING:  # session.py (recorder, rules, reports) loads only once dbguard is used
    from .session import DbguardSession, TestState  # noqa: F401

SETTINGS = pytest.StashKey[Settings]()
SESSION = pytest.StashKey["DbguardSession"]()
TEST_STATE = pytest.StashKey["TestState | None"]()


def start_session(config: pytest.Config) -> DbguardSession:
    """The run's DbguardSession, created on first need: an idle install imports none of it."""
    session = config.stash.get(SESSION, None)
    if session is None:
        from .session import DbguardSession

        session = config.stash[SESSION] = DbguardSession(config, config.stash[SETTINGS])
        config.pluginmanager.register(SharedFixtureHooks(session), "dbguard-shared-fixtures")
    return session


def current_session(config: pytest.Config) -> DbguardSession | None:
    return config.stash.get(SESSION, None)


class SharedFixtureHooks:
    """Charges session/module/class-scoped fixtures to the session, not to a test.

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
