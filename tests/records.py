"""Hand-built TestRecords for rule unit tests: queries, sites and facts without a database.

    record = (RecordBuilder()
              .query('SELECT "id" FROM "book" WHERE "id" = 1', times=3, site="shop/views.py:10")
              .build())

Rows are what the recorder would have written: the SQL goes through the real fingerprinter,
sites and connections are interned in one Catalog, phases are aggregated by build_phase.
"""

from __future__ import annotations

from typing import Any

from pytest_dbguard.events import (
    FLAG_ERROR,
    FLAG_IN_ATOMIC,
    FLAG_IN_EVENT_LOOP,
    NO_SITE,
    PARAM_KEY_SHIFT,
    PHASES,
    CallSite,
    Catalog,
    ConnInfo,
    QueryContext,
    TestRecord,
)
from pytest_dbguard.recording.fingerprint import make_shape
from pytest_dbguard.recording.recorder import build_phase
from pytest_dbguard.rules import TestContext

NODEID = "tests/test_x.py::test_x"
TEST_SITE = "tests/test_x.py:7"
APP_SITE = "shop/views.py:10"


class RecordBuilder:
    __test__ = False

    def __init__(self, nodeid: str = NODEID) -> None:
        self.nodeid = nodeid
        self.catalog = Catalog()
        self.rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in PHASES}
        self.units: dict[int, str] = {}
        self.facts: dict[str, Any] = {}
        self._shapes: dict[str, int] = {}
        self._sites: dict[str, int] = {}
        self._conns: dict[tuple[str, str, str], int] = {}

    def query(self, sql: str, *, times: int = 1, phase: str = "call", site: str | None = APP_SITE,
              alias: str = "default", vendor: str = "sqlite", thread: str = "MainThread",
              duration_ms: float = 1.0, unit: int = 0, unit_label: str | None = None,
              context: QueryContext | None = None, params: int | None = None,
              in_atomic: bool = False, in_event_loop: bool = False, error: bool = False,
              extra: dict[str, Any] | None = None) -> RecordBuilder:
        """`times` rows of one statement; `params` a parameter digest (same value: same params;
        None: the duplicate probe was off); `site` is "path:line" or None for no known site."""
        shape_i = self._shapes.get(sql)
        if shape_i is None:
            shape_i = self._shapes[sql] = self.catalog.add(self.catalog.shapes, make_shape(sql))
        site_i = self._site(site)
        conn_key = (alias, vendor, thread)
        conn_i = self._conns.get(conn_key)
        if conn_i is None:
            conn_i = self._conns[conn_key] = self.catalog.add(self.catalog.conns,
                                                              ConnInfo(alias, vendor, thread))
        context_i = 0
        if context is not None:
            context_i = self.catalog.add(self.catalog.contexts, context)
        if unit_label is not None:
            self.units[unit] = unit_label
        flags = ((FLAG_IN_ATOMIC if in_atomic else 0) | (FLAG_IN_EVENT_LOOP if in_event_loop else 0)
                 | (FLAG_ERROR if error else 0) | ((params or 0) << PARAM_KEY_SHIFT))
        row = (shape_i, site_i, context_i, conn_i, unit, flags, duration_ms / 1000.0, extra)
        self.rows[phase].extend([row] * times)
        return self

    def fact(self, name: str, value: Any) -> RecordBuilder:
        self.facts[name] = value
        return self

    def _site(self, site: str | None) -> int:
        if site is None:
            return NO_SITE
        index = self._sites.get(site)
        if index is None:
            path, _, line = site.rpartition(":")
            index = self._sites[site] = self.catalog.add(
                self.catalog.sites, CallSite(path, int(line), "function"))
        return index

    def build(self) -> TestRecord:
        phases = {name: build_phase(name, rows, dict(self.units), self.catalog)
                  for name, rows in self.rows.items() if rows}
        vendors = tuple(sorted({c.vendor for c in self.catalog.conns}))
        return TestRecord(self.nodeid, phases, vendors=vendors, facts=dict(self.facts))


def context(nodeid: str = NODEID, **options: Any) -> TestContext:
    """A TestContext with the rules' default options, overridden by keyword."""
    from pytest_dbguard.rules import builtin_registry

    merged = builtin_registry().option_defaults()
    merged.update(options)
    budget = merged.pop("budget", None)
    max_queries = merged.pop("max_queries", None)
    return TestContext(nodeid, budget=budget, max_queries=max_queries, options=merged)
