"""missing-index on PostgreSQL: EXPLAIN each query shape once per session, out of band."""

from __future__ import annotations

import json
import re
from typing import Any

from ..backends import for_vendor
from ..events import NO_SITE
from .recorder import Hub, TestRecorder

_EXPLAINABLE = ("SELECT", "UPDATE", "DELETE", "WITH")
# the left side of a comparison in a PostgreSQL plan filter: (author_id = '5'::bigint),
# ((name)::text = 'x'::text), (upper((title)::text) ~~ ...) gives author_id, name, title
_FILTER_COLUMN_RE = re.compile(
    r'\(*"?([A-Za-z_][A-Za-z0-9_]*)"?\)*(?:::[a-z ]+(?:\[\])?\)*)?\s*'
    r"(?:=|<>|!=|<=|>=|<|>|~~\*?|!~~\*?|IS\b|@>|<@)"
)
_NOT_COLUMNS = {"ANY", "ALL", "NOT", "AND", "OR", "NULL", "TRUE", "FALSE", "upper", "lower"}
SAVEPOINT = "dbguard_explain"


def filter_columns(filter_text: str) -> list[str]:
    found = []
    for name in _FILTER_COLUMN_RE.findall(filter_text):
        if name not in _NOT_COLUMNS and name not in found:
            found.append(name)
    return found


def seq_scans(plan: Any) -> list[dict[str, Any]]:
    """Sequential scans that apply a filter, anywhere in a FORMAT JSON plan."""
    found: list[dict[str, Any]] = []
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "Plan" in node:
                stack.append(node["Plan"])
            if node.get("Node Type") == "Seq Scan" and node.get("Filter"):
                found.append({
                    "table": node.get("Relation Name", "?"),
                    "filter": node["Filter"],
                    "columns": filter_columns(node["Filter"]),
                })
            stack.extend(node.get("Plans", ()))
    return found


class ExplainProbe:
    """Captures one example per new query shape during the call phase, explains it at its end.

    The EXPLAIN runs on the test's own driver connection, so it sees the test's uncommitted
    rows, inside a savepoint (or a throwaway transaction) that scopes `enable_seqscan = off`.
    Results are cached per fingerprint for the session: a shape is explained once.
    """

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.verdicts: dict[int, list[dict[str, Any]]] = {}
        self._pending: dict[int, tuple[str, Any, Any, int]] = {}
        self._recorder: TestRecorder | None = None

    def capture(self, shape: int, sql: str, params: Any, conn: Any, site: int) -> None:
        """Called by the tap for each query while --dbguard-explain is on: cheap when seen."""
        if shape in self._pending or not for_vendor(conn.vendor).explains:
            return
        self._pending[shape] = (sql, params, conn, site)

    def start_test(self, recorder: TestRecorder) -> None:
        self._pending.clear()
        self._recorder = recorder

    def end_phase(self, recorder: TestRecorder, phase: str) -> None:
        pending, self._pending = self._pending, {}
        if phase != "call":
            return
        shapes = self.hub.catalog.shapes
        results = []
        for shape_i, (sql, params, conn, site) in pending.items():
            shape = shapes[shape_i]
            if shape.verb not in _EXPLAINABLE or shape.is_transaction_control:
                continue
            verdict = self.verdicts.get(shape_i)
            if verdict is None:
                verdict = self._explain(conn, sql, params)
                if verdict is None:
                    continue  # could not explain now (aborted transaction): try another time
                self.verdicts[shape_i] = verdict
            for scan in verdict:
                results.append(dict(scan, fingerprint=shape.fingerprint,
                                    fingerprint_id=shape.fingerprint_id,
                                    alias=conn.alias, site=site if site != NO_SITE else None))
        recorder.facts["explain"] = results

    def _explain(self, conn: Any, sql: str, params: Any) -> list[dict[str, Any]] | None:
        raw = conn.connection
        if raw is None or getattr(raw, "closed", False):
            return None
        info = getattr(raw, "info", None)
        if info is not None and int(info.transaction_status) == 3:  # INERROR
            return None
        own_transaction = bool(getattr(raw, "autocommit", False))
        with self.hub.paused(), raw.cursor() as cursor:
            cursor.execute("BEGIN" if own_transaction else f"SAVEPOINT {SAVEPOINT}")
            try:
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                row = cursor.fetchone()
            except Exception:
                row = None
            finally:
                if own_transaction:
                    cursor.execute("ROLLBACK")
                else:
                    cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
                    cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
        if row is None:
            return []
        plan = row[0]
        if isinstance(plan, str | bytes):
            plan = json.loads(plan)
        return seq_scans(plan)
