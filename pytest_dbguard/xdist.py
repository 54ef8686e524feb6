"""pytest-xdist wiring: workers hand session-level data to the controller through workeroutput.

Registered only when xdist is installed. Per-test entries do not come this way: they ride on each
test's teardown report (report.dbguard_entry), so a worker crash loses at most the test it was
running. What does come this way is what only exists once per worker: queries of shared
fixtures, internal errors, notes, and the SQL text of every fingerprint the worker saw.
"""

from __future__ import annotations

from typing import Any

import pytest

from .runstate import current_session, start_session

PAYLOAD_KEY = "dbguard"


class XdistBridge:
    """Looks the run's session up when it needs it: sessions start lazily (see plugin.py)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    # -- worker side ----------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        dbguard = current_session(self.config)
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None and dbguard is not None:
            workeroutput[PAYLOAD_KEY] = dbguard.worker_payload()

    # -- controller side ------------------------------------------------------------------
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        dbguard = current_session(self.config)
        if dbguard is not None:
            dbguard.note_selected(list(ids))

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        payload = output.get(PAYLOAD_KEY)
        dbguard = current_session(self.config)
        if dbguard is None and (payload is not None or error is not None):
            dbguard = start_session(self.config)
        if dbguard is not None:
            dbguard.merge_worker(str(node.gateway.id), payload, error)
