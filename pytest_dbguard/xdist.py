"""pytest-xdist wiring: workers hand session-level data to the controller through workeroutput.

Registered only when xdist is installed. Per-test entries do not come this way: they ride on each
test's teardown report (report.dbguard_entry), so a worker crash loses at most the test it was
running. What does come this way is what only exists once per worker: queries of shared
fixtures, internal errors, notes, and the SQL text of every fingerprint the worker saw.
"""

from __future__ import annotations

from typing import Any

import pytest

from .session import DbguardSession

PAYLOAD_KEY = "dbguard"


class XdistBridge:
    def __init__(self, session: DbguardSession) -> None:
        self.session = session

    # -- worker side ----------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput[PAYLOAD_KEY] = self.session.worker_payload()

    # -- controller side ------------------------------------------------------------------
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.session.note_selected(list(ids))

    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        self.session.merge_worker(str(node.gateway.id), output.get(PAYLOAD_KEY), error)
