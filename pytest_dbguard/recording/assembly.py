"""Putting recording together for a run: the hub, the Django taps and the probes rules ask for."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from . import (
    PROBE_CENSUS,
    PROBE_EXPLAIN,
    PROBE_LIFECYCLE,
    PROBE_PARAM_KEYS,
    PROBE_PSYCOPG,
    PROBE_TEMPLATES,
)
from .recorder import Hub

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

    def __init__(self, hub: Hub, taps: Any) -> None:
        self.hub = hub
        self.taps = taps
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
        recording = cls(hub, taps)
        recording._add_lifecycle_probes(probes, test_files, note)
        return recording

    def _add_lifecycle_probes(self, probes: frozenset[str], test_files: tuple[str, ...],
                              note: Callable[[str], None]) -> None:
        # Only what an active rule reads is installed: a run that uses markers alone (no
        # --dbguard) gets no psycopg wrappers and no server census.
        if not probes & {PROBE_LIFECYCLE, PROBE_PSYCOPG, PROBE_CENSUS}:
            return
        from .census import CensusProbe
        from .psycopg import PsycopgProbe
        from .txstate import LifecycleProbe

        hub, taps = self.hub, self.taps
        raw = PsycopgProbe(hub, taps.note_peak)
        # order matters: the census names the backends the other probes could not
        installed: list[Any] = [LifecycleProbe(hub, taps, test_files + ("conftest.py",)), raw]
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

    def after_test(self) -> None:
        if self._timeouts is not None:
            self._timeouts.retry_pending()

    def close(self) -> None:
        """Undo what recording installed (psycopg wrappers) and close the plugin's connections."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()
