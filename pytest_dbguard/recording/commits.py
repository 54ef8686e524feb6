"""Commits and rollbacks of Django connections, and which connections are the test's own.

Django commits through `connection.commit()` (the outermost atomic block's exit, or code that
manages transactions by hand), never through a cursor, so the query taps do not see it: the
probe wraps `BaseDatabaseWrapper.commit` and `rollback` while the session records and notes
where in the phase's rows each one happened. `uninstall()` puts the originals back.
"""

from __future__ import annotations

from typing import Any

from ..facts import COMMITS, CommitFacts
from .recorder import Hub, TestRecorder


def conn_index(hub: Hub, wrapper: Any) -> int | None:
    """The catalog index the query tap of a Django connection object writes into its rows."""
    for tap in getattr(wrapper, "execute_wrappers", ()):
        if getattr(tap, "dbguard_hub", None) is hub:
            return getattr(tap, "conn_index", None)
    return None


class CommitProbe:
    """Notes commits and rollbacks, and the test thread's connections and rolled-back aliases."""

    name = COMMITS

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.events: list[tuple[str, int, int, str]] = []
        self.test_conns: set[int] = set()
        self.rolled_back: tuple[str, ...] = ()
        self.databases: tuple[str, ...] = ()
        self._originals: list[tuple[Any, str, Any]] = []
        # the facts of an earlier test without commits: frozen, so a test that finds the same
        # connections and no commit shares them
        self._last: CommitFacts | None = None
        self._last_conns: set[int] = set()

    def install(self) -> None:
        from django.db.backends.base.base import BaseDatabaseWrapper

        for attr in ("commit", "rollback"):
            original = BaseDatabaseWrapper.__dict__[attr]
            self._originals.append((BaseDatabaseWrapper, attr, original))
            setattr(BaseDatabaseWrapper, attr, self._wrap(original, attr))

    def uninstall(self) -> None:
        for owner, attr, original in reversed(self._originals):
            setattr(owner, attr, original)
        self._originals.clear()

    def _wrap(self, original: Any, kind: str) -> Any:
        probe = self
        hub = self.hub

        def wrapped(wrapper: Any) -> None:
            original(wrapper)
            # after the call: a commit that raised (a deferred constraint) committed nothing;
            # outside a test (or in a shared fixture) nothing is noted
            rows = hub.rows
            if rows is not None and rows is not hub.shared_rows:
                probe.note(wrapper, kind)

        wrapped.__wrapped__ = original  # type: ignore[attr-defined]
        return wrapped

    def note(self, wrapper: Any, kind: str) -> None:
        hub = self.hub
        rows, recorder = hub.rows, hub.recorder
        if rows is None or recorder is None or rows is hub.shared_rows:
            return
        index = conn_index(hub, wrapper)
        if index is not None:
            self.events.append((recorder.current_phase or "call", len(rows), index, kind))

    # -- probe protocol ----------------------------------------------------------------------
    def start_test(self, recorder: TestRecorder) -> None:
        if self.events:
            self.events = []
        self.test_conns = set()
        self.rolled_back = ()
        self.databases = ()

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        # escaped-write, the one rule that reads these facts, is judged when the call phase
        # ends: the facts are built then, from what the set-up and the body left
        if phase == "teardown":
            return
        # end_phase runs on the test thread: its connections are the test's own
        wrappers = recorder.test_thread_wrappers()
        hub, test_conns = self.hub, self.test_conns
        for wrapper in wrappers:
            index = conn_index(hub, wrapper)
            if index is not None:
                test_conns.add(index)
        if phase == "setup":
            # inside atomic when the body begins: the test's changes are rolled back at its end
            rolled_back = [w for w in wrappers if w.in_atomic_block]
            if len(rolled_back) == 1:  # pytest-django's `db` on one database
                self.rolled_back = (rolled_back[0].alias,)
                self.databases = (str(rolled_back[0].settings_dict.get("NAME") or ""),)
            elif rolled_back:
                self.rolled_back = tuple(sorted(w.alias for w in rolled_back))
                self.databases = tuple(sorted({str(w.settings_dict.get("NAME") or "")
                                               for w in rolled_back}))
            return
        last = self._last
        if (not self.events and last is not None and test_conns == self._last_conns
                and last.rolled_back == self.rolled_back
                and last.rolled_back_databases == self.databases):
            # what most tests of a suite find: the same connections, no commit noted
            recorder.facts[self.name] = last
            return
        facts = CommitFacts(test_conns=tuple(sorted(test_conns)), rolled_back=self.rolled_back,
                            events=tuple(self.events), rolled_back_databases=self.databases)
        if not self.events:
            self._last, self._last_conns = facts, test_conns
        recorder.facts[self.name] = facts
