"""The `dbguard` fixture: live access to what the current test has recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from . import markers
from .events import Finding, Query
from .recording.assembly import DJANGO_NOT_CONFIGURED
from .recording.recorder import TestRecorder, build_phase
from .rules.budget import Budget, describe_excess

if TYPE_CHECKING:
    from .session import TestState


class DbguardFixture:
    """The `dbguard` fixture: live access to what the current test has recorded."""

    def __init__(self, state: TestState | None) -> None:
        self._state = state

    def _recorder(self) -> TestRecorder:
        if self._state is None or self._state.recorder is None:
            raise RuntimeError(DJANGO_NOT_CONFIGURED)
        return self._state.recorder

    @property
    def queries(self) -> list[Query]:
        """Every query the test ran so far (setup, then the call phase up to now)."""
        recorder = self._recorder()
        out: list[Query] = []
        for name, phase_record in recorder.phase_records.items():
            if name != recorder.current_phase:
                out.extend(phase_record.queries())
        out.extend(self._live().queries())
        return out

    def _live(self, rows: Any = None) -> Any:
        recorder = self._recorder()
        hub = recorder.hub
        return build_phase(recorder.current_phase or "call",
                           list(recorder.live_rows() if rows is None else rows),
                           dict(hub.unit_labels), hub.catalog)

    def count(self, using: str | list[str] | None = None, count_tx: bool = False) -> int:
        """Queries of the running phase so far (transaction control excluded by default)."""
        return self._live().count(using, count_tx)

    @contextmanager
    def budget(self, n: int, using: str | list[str] | None = None,
               count_tx: bool = False) -> Iterator[None]:
        """Fail with dbguard's grouped message if the block runs more than n queries."""
        try:
            limit = markers.query_budget(n, using=using, count_tx=count_tx)
        except markers.MarkerError as exc:
            raise TypeError(f"dbguard.budget(): {exc}") from None
        recorder = self._recorder()
        rows = recorder.live_rows()
        start = len(rows)
        yield
        block = self._live(rows[start:])
        finding = describe_excess(block, Budget(limit.limit, limit.using, limit.count_tx,
                                                source="dbguard.budget() block"),
                                  recorder.nodeid, where=recorder.current_phase or "call")
        if finding is not None:
            pytest.fail(finding.render(), pytrace=False)

    @property
    def findings(self) -> list[Finding]:
        return list(self._state.findings) if self._state else []

    @property
    def stress_index(self) -> int | None:
        """This thread's index (0..threads-1) while the test runs under stress, else None."""
        from .stress.runner import current_index

        return current_index()
