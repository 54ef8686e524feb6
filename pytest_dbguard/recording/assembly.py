"""Putting recording together for a run: the hub, the Django taps and the probes rules ask for."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from types import CodeType
from typing import Any

from . import (
    PROBE_BODY_UNITS,
    PROBE_CENSUS,
    PROBE_COMMITS,
    PROBE_EAGER_LOADS,
    PROBE_EXPLAIN,
    PROBE_LIFECYCLE,
    PROBE_LOAD_GROUPS,
    PROBE_LOCKS,
    PROBE_PARAM_KEYS,
    PROBE_PSYCOPG,
    PROBE_TEMPLATES,
)
from .bodysteps import BodySteps, test_code
from .recorder import Hub, TestRecorder

DJANGO_NOT_CONFIGURED = (
    "dbguard needs Django: configure pytest-django (DJANGO_SETTINGS_MODULE in pytest.ini or "
    "the environment) before using dbguard markers or the dbguard fixture."
)


def django_ready() -> bool:
    """True once pytest-django (or the user) configured settings; never imports Django itself."""
    if "django" not in sys.modules:
        return False
    try:
        from django.apps import apps
        from django.conf import settings

        return bool(settings.configured and apps.ready)
    except Exception:
        return False


class Recording:
    """The run's hub with exactly the probes its active rules read, and how to undo them."""

    def __init__(self, hub: Hub, taps: Any, probes: frozenset[str] = frozenset()) -> None:
        self.hub = hub
        self.taps = taps
        self.probes = probes
        self._closers: list[Callable[[], None]] = []
        self._timeouts: Any = None

    @classmethod
    def assemble(cls, probes: Iterable[str], *, rootdir: str, show_params: bool,
                 test_files: tuple[str, ...], note: Callable[[str], None]) -> Recording:
        from .django_db import DjangoTaps

        probes = frozenset(probes)
        hub = Hub(rootdir=rootdir, show_params=show_params)
        hub.collect_param_keys = PROBE_PARAM_KEYS in probes
        hub.watch_templates = PROBE_TEMPLATES in probes
        if PROBE_EXPLAIN in probes:
            from .explain import ExplainProbe

            probe = ExplainProbe(hub)
            hub.probes.append(probe)
            hub.explain_capture = probe.capture
        taps = DjangoTaps(hub)
        taps.install()
        recording = cls(hub, taps, probes)
        from . import awaits

        recording._closers.append(awaits.install(hub, hub.handoff_hooks))
        if PROBE_LOAD_GROUPS in probes:
            from . import loads

            recording._closers.append(loads.install(hub))
        if PROBE_EAGER_LOADS in probes:
            from .eager import EagerProbe

            eager = EagerProbe(hub)
            recording._closers.append(eager.install())
            hub.probes.append(eager)
        if PROBE_COMMITS in probes:
            from .commits import CommitProbe

            commits = CommitProbe(hub)
            commits.install()
            hub.probes.append(commits)
            recording._closers.append(commits.uninstall)
        if PROBE_LOCKS in probes:
            from .lock_sampler import LockSampler

            sampler = LockSampler(hub, taps.wrappers)
            hub.probes.append(sampler)
            recording._closers.append(sampler.close)
        recording._add_lifecycle_probes(probes, test_files, note)
        return recording

    def _add_lifecycle_probes(self, probes: frozenset[str], test_files: tuple[str, ...],
                              note: Callable[[str], None]) -> None:
        # Only what an active rule reads is installed: a run that uses markers alone (no
        # --dbguard) gets no psycopg wrappers and no server census.
        if not probes & {PROBE_LIFECYCLE, PROBE_PSYCOPG, PROBE_CENSUS}:
            return
        from .atomic_exits import AtomicExits
        from .census import CensusProbe
        from .psycopg import PsycopgProbe
        from .txstate import LifecycleProbe

        hub, taps = self.hub, self.taps
        raw = PsycopgProbe(hub, taps.note_peak)
        exits = AtomicExits(hub.classifier)
        exits.install()
        self._closers.append(exits.uninstall)
        # order matters: the census names the backends the other probes could not
        installed: list[Any] = [
            LifecycleProbe(hub, taps, test_files + ("conftest.py",), exits=exits), raw]
        self._closers.append(raw.uninstall)
        if PROBE_CENSUS in probes:
            census = CensusProbe(hub, taps, raw, note)
            installed.append(census)
            self._closers.append(census.close)
        hub.probes.extend(installed)

    def query_timeouts(self) -> Any:
        if self._timeouts is None:
            from .timeouts import QueryTimeouts

            self._timeouts = QueryTimeouts(self.hub)
        return self._timeouts

    # -- one test ---------------------------------------------------------------------------
    def body_code(self, test_function: Any) -> CodeType | None:
        """The test function's code when its top-level calls are to be units of work."""
        if PROBE_BODY_UNITS not in self.probes:
            return None
        return test_code(test_function)

    def begin_call(self, recorder: TestRecorder, body_code: CodeType | None,
                   unittest_case: Any) -> Any:
        """The call phase starts: a TestCase's setUp/tearDown charged to their phases, and
        each top-level call of the test body its own unit of work. Returns what end_call()
        takes (plain calls rather than a context manager: this runs for every test)."""
        if unittest_case is not None:
            from .unitphases import charge_unittest_phases

            charge_unittest_phases(unittest_case, recorder)
        if body_code is None:
            return None
        steps = BodySteps(self.hub, body_code)
        steps.__enter__()
        return steps

    def end_call(self, steps: Any) -> None:
        if steps is not None:
            steps.__exit__(None, None, None)

    def before_shared_teardown(self) -> None:
        """The test's own fixtures are gone and a shared one (pytest-django's test database)
        is next: probes judge and close the test's leaks while the database still exists."""
        recorder = self.hub.recorder
        if recorder is None or recorder.current_phase != "teardown":
            return
        for probe in self.hub.probes:
            before = getattr(probe, "before_shared_teardown", None)
            if before is not None:
                before(recorder)

    def after_test(self) -> None:
        if self._timeouts is not None:
            self._timeouts.retry_pending()

    def close(self) -> None:
        """Undo what recording installed (psycopg wrappers) and close the plugin's connections."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()
