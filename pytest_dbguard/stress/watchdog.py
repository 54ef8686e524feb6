"""The stress watchdog: the plugin's own database connection watching the stressed backends.

Through the backend's lock monitor (backends/; PostgreSQL: `pg_stat_activity`, `pg_locks`,
`pg_blocking_pids()`) it samples the backends the stressed threads opened (and only those),
builds the wait-for graph, maps each backend to its thread and to the user code line the thread
is blocked on, and remembers cycles (deadlocks in the making) and long lock waits. Its own
statements have a statement timeout, so it can never be the thing that hangs; on a hang it
cancels, then terminates, only those backends.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from ..backends import LockMonitor, MonitorUnavailable, SessionSample, for_vendor
from ..recording.fingerprint import make_shape, short_sql
from .registry import MAIN_THREAD, Backend, BackendRegistry

SAMPLE_INTERVAL_S = 0.02
# The watchdog's own statements: short enough that a stuck catalog never stalls a round.
STATEMENT_TIMEOUT_MS = 1000
CONNECT_TIMEOUT_S = 5
APPLICATION_NAME = "pytest-dbguard watchdog"


SiteOf = Callable[[FrameType | None], "str | None"]


class Watchdog:
    def __init__(self, params: dict[str, Any], registry: BackendRegistry, site_of: SiteOf,
                 show_params: bool = False, interval: float = SAMPLE_INTERVAL_S,
                 vendor: str = "postgresql") -> None:
        self.params = params
        self.backend = for_vendor(vendor)  # the one database whose locks can be sampled so far
        self.registry = registry
        self.site_of = site_of
        self.show_params = show_params
        self.interval = interval
        self.samples = 0
        self.sample_errors = 0
        self._monitor: LockMonitor | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round: int | None = None
        self._round_started = 0.0
        self._round_starts: dict[int, float] = {}
        self._hung_rounds: set[int] = set()
        # (round, pid, query_start) -> the longest wait seen for that statement
        self._waits: dict[tuple[int, int, float], dict[str, Any]] = {}
        # (round, frozenset of pids) -> the cycle as first seen
        self._cycles: dict[tuple[int, frozenset[int]], dict[str, Any]] = {}
        self._worst: dict[str, Any] | None = None
        self._shapes: dict[str, str] = {}
        # pid -> (database, backend start) when the watchdog first saw that backend
        self.identities: dict[int, tuple[str, Any]] = {}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> str | None:
        """Connect and start sampling; a sentence saying why not, when lock analysis is off."""
        try:
            self._monitor = self.backend.lock_monitor(self.params, APPLICATION_NAME,
                                                      STATEMENT_TIMEOUT_MS, CONNECT_TIMEOUT_S)
        except MonitorUnavailable as exc:
            return str(exc)
        self._thread = threading.Thread(target=self._loop, name="dbguard-stress-watchdog",
                                        daemon=True)
        self._thread.start()
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STATEMENT_TIMEOUT_MS / 1000 + 1)
        with self._lock:
            if self._monitor is not None:
                with contextlib.suppress(Exception):
                    self._monitor.close()
                self._monitor = None

    def begin_round(self, index: int, started: float) -> None:
        self._round_started = self._round_starts[index] = started
        self._round = index

    def end_round(self) -> None:
        if self._round is not None:
            self.sample()  # a last look: a wait that ended with the round still counts
        self._round = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self._round is not None:
                self.sample()

    # -- sampling -------------------------------------------------------------------------
    def sample(self) -> dict[str, Any] | None:
        """One look at the stressed backends: the wait-for graph with threads and call sites."""
        index = self._round
        if index is None:
            return None
        backends = {b.pid: b for b in self.registry.watched(index)}
        if not backends:
            return None
        # where each thread is before the catalog query and after it: a thread's line counts
        # only when both agree, so a thread that moved on (its deadlock resolved meanwhile)
        # never lends the next line to a wait the catalog still showed
        sites_before = self._sites(backends)
        with self._lock:
            if self._monitor is None:
                return None
            try:
                rows = self._monitor.sample(list(backends))
            except Exception:
                self.sample_errors += 1
                return None
        self.samples += 1
        now = time.perf_counter()
        nodes: dict[int, dict[str, Any]] = {}
        wait_s_of: dict[int, float | None] = {}
        start_of: dict[int, float] = {}
        for row in rows:
            self._remember_identity(row)
            wait_s_of[row.pid] = row.wait_s
            start_of[row.pid] = row.statement_start
            nodes[row.pid] = {
                "pid": row.pid,
                "thread": backends[row.pid].thread,
                "state": row.state,
                "sql": self.show_sql(row.sql) if row.sql else None,
                "site": None,
                "blocked_by": list(row.blocked_by),
                "waits_for": row.waits_for,
            }
        if any(node["waits_for"] for node in nodes.values()):
            # where each thread is in its Python code: the waiter's statement, and what the
            # lock holder is doing meanwhile (sleeping, calling out, waiting on a Python lock)
            sites_after = self._sites(backends)
            for node in nodes.values():
                site = sites_after.get(node["pid"])
                node["site"] = site if site == sites_before.get(node["pid"]) else None
        for pid, node in nodes.items():
            if node["waits_for"] is None:
                continue
            key = (index, pid, start_of[pid])
            wait_s = wait_s_of[pid]
            wait_ms = float(wait_s) * 1000.0 if wait_s is not None else None
            seen = self._waits.get(key)
            if seen is None:
                seen = self._waits[key] = {"round": index, "first_seen": now, "wait_ms": 0.0,
                                           "blocked": dict(node), "blockers": {},
                                           "in_cycle": False}
            if wait_ms is None:
                wait_ms = (now - seen["first_seen"]) * 1000.0 + self.interval * 500.0
            seen["wait_ms"] = max(seen["wait_ms"], wait_ms)
            if seen["blocked"].get("site") is None:
                seen["blocked"]["site"] = node["site"]
            for blocker in node["blocked_by"]:
                # the first look at a holder says what it did while the wait began; a later
                # sample can catch its thread already leaving the block (the catalog still
                # shows the old state), so it only fills in a line the first look missed
                described = self._describe(blocker, nodes)
                known_blocker = seen["blockers"].setdefault(blocker, described)
                if known_blocker.get("site") is None:
                    known_blocker["site"] = described["site"]
        for cycle in _cycles(nodes):
            key2 = (index, frozenset(cycle))
            known = self._cycles.get(key2)
            if known is None:
                self._cycles[key2] = {
                    "round": index,
                    "pids": list(cycle),
                    "seen_after_ms": round((now - self._round_started) * 1000.0, 1),
                    "sides": [dict(nodes[pid]) for pid in cycle],
                }
            else:
                # a thread can move between the catalog query and the stack snapshot (a busy
                # machine); a later sample of the same cycle fills in the line it missed
                for known_side in known["sides"]:
                    if known_side["site"] is None:
                        known_side["site"] = nodes[known_side["pid"]]["site"]
            for pid in cycle:
                for wait_key, wait in self._waits.items():
                    if wait_key[0] == index and wait_key[1] == pid:
                        wait["in_cycle"] = True
        edges = [{"blocked": pid, "blocker": b} for pid, n in nodes.items()
                 for b in n["blocked_by"]]
        graph: dict[str, Any] = {"round": index, "nodes": list(nodes.values()), "edges": edges}
        if self._worst is None or len(graph["edges"]) > len(self._worst["edges"]):
            self._worst = graph
        return graph

    def _sites(self, backends: dict[int, Backend]) -> dict[int, str | None]:
        frames = sys._current_frames()
        return {pid: self.site_of(frames.get(b.ident)) for pid, b in backends.items()}

    def snapshot(self) -> dict[str, Any] | None:
        """A fresh graph for a hang report (the round is still running when it is taken)."""
        index = self._round
        graph = self.sample()
        if index is not None:
            self._hung_rounds.add(index)
        return graph

    def _describe(self, pid: int, nodes: dict[int, dict[str, Any]]) -> dict[str, Any]:
        node = nodes.get(pid)
        if node is not None:
            return {"pid": pid, "thread": node["thread"], "state": node["state"],
                    "sql": node["sql"], "site": node["site"]}
        return {"pid": pid, "thread": None, "state": None, "sql": None, "site": None,
                "note": "a backend this test's stressed threads did not open; not inspected"}

    def show_sql(self, sql: str) -> str:
        if self.show_params:
            return sql.strip()
        shown = self._shapes.get(sql)
        if shown is None:
            shown = short_sql(make_shape(sql).fingerprint)
            if len(self._shapes) < 1000:
                self._shapes[sql] = shown
        return shown

    # -- results --------------------------------------------------------------------------
    def lock_waits(self, threshold_ms: int) -> list[dict[str, Any]]:
        """Waits of at least threshold_ms that were not part of a deadlock or a hang.

        A wait behind a deadlocked backend lasts as long as the deadlock: the deadlock finding
        explains it, so it is not reported twice.
        """
        in_cycles: dict[int, set[int]] = {}
        for (round_index, members) in self._cycles:
            in_cycles.setdefault(round_index, set()).update(members)
        out = []
        for wait in self._waits.values():
            if wait["in_cycle"] or wait["round"] in self._hung_rounds:
                continue
            if set(wait["blockers"]) & in_cycles.get(wait["round"], set()):
                continue
            if wait["wait_ms"] < threshold_ms:
                continue
            out.append({"round": wait["round"], "wait_ms": round(wait["wait_ms"], 1),
                        "blocked": wait["blocked"], "blockers": list(wait["blockers"].values())})
        return out

    def cycle_for(self, index: int, victim_pid: int | None, pids: Iterable[int]
                  ) -> dict[str, Any] | None:
        """The cycle of a deadlock PostgreSQL reported between `pids` (its 40P01 detail).

        A sample that caught every side waiting at once is best. PostgreSQL's word on the pair
        is authoritative, though, and a side that joined the cycle just before the deadlock
        check may never be caught at the same moment as the others: then the cycle is put
        together from each side's own sampled wait, provided every side was seen waiting for
        another member of the cycle.
        """
        wanted = set(pids)
        best = None
        for (round_index, members), cycle in self._cycles.items():
            if round_index != index:
                continue
            if wanted and wanted <= members:
                return cycle
            if victim_pid is not None and victim_pid in members:
                best = best or cycle
        return best or self._cycle_from_waits(index, wanted)

    def _cycle_from_waits(self, index: int, pids: set[int]) -> dict[str, Any] | None:
        if len(pids) < 2:
            return None
        latest: dict[int, dict[str, Any]] = {}
        for (round_index, pid, _), wait in self._waits.items():
            if round_index != index or pid not in pids:
                continue
            if not set(wait["blocked"]["blocked_by"]) & (pids - {pid}):
                continue
            if pid not in latest or wait["first_seen"] > latest[pid]["first_seen"]:
                latest[pid] = wait
        if set(latest) != pids:
            return None  # a side was never seen waiting: PostgreSQL's detail alone tells
        order = [min(pids)]
        while len(order) < len(pids):
            nxt = [b for b in latest[order[-1]]["blocked"]["blocked_by"]
                   if b in pids and b not in order]
            order.append(nxt[0] if nxt else min(pids - set(order)))
        for wait in latest.values():
            wait["in_cycle"] = True
        cycle = self._cycles[(index, frozenset(pids))] = {
            "round": index,
            "pids": order,
            "seen_after_ms": round((max(w["first_seen"] for w in latest.values())
                                    - self._round_starts[index]) * 1000.0, 1),
            "sides": [dict(latest[pid]["blocked"]) for pid in order],
        }
        return cycle

    def worst_graph(self) -> dict[str, Any] | None:
        return self._worst

    # -- cancelling (only registry backends) ----------------------------------------------
    def cancel(self, pids: list[int]) -> list[int]:
        return self._signal(False, pids)

    def terminate(self, pids: list[int]) -> list[int]:
        return self._signal(True, pids)

    def _remember_identity(self, row: SessionSample) -> None:
        expected = self.params.get("dbname")
        if (row.pid in self.identities or row.session_start is None
                or (expected and row.database != expected)):
            return  # a pid already taken by another database is never ours to signal
        self.identities[row.pid] = (str(row.database), row.session_start)

    def _signal(self, terminate: bool, pids: list[int]) -> list[int]:
        # a session is signalled only if a stressed thread opened it and it is still the
        # session first seen under that pid (the monitor re-checks it in the same statement)
        own = [pid for pid in pids if (b := self.registry.get(pid)) and b.thread != MAIN_THREAD
               and pid in self.identities]
        if not own:
            return []
        with self._lock:
            if self._monitor is None:
                return []
            try:
                return self._monitor.signal(terminate, [(pid, *self.identities[pid])
                                                        for pid in own])
            except Exception:
                self.sample_errors += 1
                return []


def _cycles(nodes: dict[int, dict[str, Any]]) -> list[tuple[int, ...]]:
    """Cycles of the wait-for graph among the watched backends, each once, smallest pid first."""
    found: set[tuple[int, ...]] = set()

    def walk(start: int, pid: int, path: list[int]) -> None:
        for nxt in nodes[pid]["blocked_by"]:
            if nxt not in nodes:
                continue
            if nxt == start:
                low = path.index(min(path))
                found.add(tuple(path[low:] + path[:low]))
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for pid in nodes:
        walk(pid, pid, [pid])
    return sorted(found)
