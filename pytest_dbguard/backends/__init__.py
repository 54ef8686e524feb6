"""What dbguard does differently per database: one module per backend, chosen by Django's vendor.

Probes, the stress runner and rules ask `for_vendor(connection.vendor)` what the database can do
instead of comparing vendor names; a new database is one module here plus its row in BACKENDS.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# How a query timeout is enforced on a backend.
TIMEOUT_NONE = "none"
TIMEOUT_SETTING = "setting"  # a session setting the server enforces (read, set, put back)
TIMEOUT_PROGRESS = "progress"  # a client-side progress handler that interrupts the statement


class MonitorUnavailable(Exception):
    """The plugin's own monitoring connection could not be opened; str() says why, for users."""


@dataclass(frozen=True)
class SessionSample:
    """One server session (backend) as a lock monitor saw it, in vendor-neutral terms."""

    pid: int
    state: str | None
    sql: str | None
    statement_start: float  # when its current (or last) statement started, epoch seconds
    # sessions it waits for; empty unless it is waiting on a lock right now
    blocked_by: tuple[int, ...]
    # the lock it waits for: locktype, mode, object, relation, row (None when not waiting)
    waits_for: dict[str, Any] | None
    wait_s: float | None  # how long it has waited, when the server can tell
    database: str | None
    session_start: Any  # with pid and database: which session this is (pids are reused)


class LockMonitor:
    """The stress watchdog's own connection: samples the watched sessions, stops them."""

    def sample(self, pids: list[int]) -> list[SessionSample]:
        raise NotImplementedError

    def signal(self, terminate: bool, seen: list[tuple[int, str, Any]]) -> list[int]:
        """Cancel (or terminate) sessions still identical to (pid, database, session start)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Backend:
    """A database dbguard has no special support for: queries are recorded, nothing more."""

    vendor = "other"
    timeout = TIMEOUT_NONE
    explains = False  # EXPLAIN each query shape once (missing-index)
    samples_locks = False  # the stress watchdog reads the server's lock table and cancels
    takes_census = False  # the server lists the sessions a test left connected

    def cancelled_by_timeout(self, error: str, sqlstate: str | None) -> bool:
        """Whether a failed statement was cancelled by dbguard's query timeout."""
        return False

    def close(self, connection: Any) -> None:
        """Close a Django connection for good (the stress runner's threads end with this)."""
        connection.close()

    def pooler_unsafe(self, fingerprint: str, prepared: bool = False) -> tuple[str, str] | None:
        """(what, fix) when a statement sets session state a transaction pooler loses."""
        return None

    # -- the plugin's own monitoring connections (samples_locks / takes_census) -----------
    def lock_monitor(self, params: dict[str, Any], application_name: str,
                     statement_timeout_ms: int, connect_timeout_s: int) -> LockMonitor:
        """The stress watchdog's connection; raises MonitorUnavailable saying why not."""
        raise MonitorUnavailable(f"lock analysis is not available on {self.vendor}")

    def monitor_connection(self, settings_dict: dict[str, Any], application_name: str) -> Any:
        """A read-only connection of the plugin's own (lock sampler, census); may raise."""
        raise NotImplementedError

    def lock_waits(self, conn: Any, databases: list[str]) -> list[tuple[Any, ...]]:
        """(pid, sql, waited ms, blocker pid, blocker state, blocker sql) per waiting session."""
        return []

    def census(self, conn: Any, databases: list[str], since: float) -> list[tuple[Any, ...]]:
        """(pid, database, state, application, session start) of client sessions since then."""
        return []

    def server_clock(self, conn: Any) -> float | None:
        """The server's clock, epoch seconds (to line its timestamps up with this process's)."""
        return None


def for_vendor(vendor: str) -> Backend:
    backend = BACKENDS.get(vendor)
    if backend is None:
        backend = BACKENDS[vendor] = _load(vendor)
    return backend


# Django vendor -> (module under backends/, class): imported on first use.
MODULES = {"postgresql": ("postgresql", "PostgreSQL"), "sqlite": ("sqlite", "SQLite")}
BACKENDS: dict[str, Backend] = {}


def _load(vendor: str) -> Backend:
    if vendor not in MODULES:
        return Backend()
    module, name = MODULES[vendor]
    backend: Backend = getattr(importlib.import_module(f"{__name__}.{module}"), name)()
    return backend
