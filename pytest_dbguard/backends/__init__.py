"""What dbguard does differently per database: one module per backend, chosen by Django's vendor.

Probes, the stress runner and rules ask `for_vendor(connection.vendor)` what the database can do
instead of comparing vendor names; a new database is one module here plus its row in BACKENDS.
"""

from __future__ import annotations

import importlib
from typing import Any

# How a query timeout is enforced on a backend.
TIMEOUT_NONE = "none"
TIMEOUT_SETTING = "setting"  # a session setting the server enforces (read, set, put back)
TIMEOUT_PROGRESS = "progress"  # a client-side progress handler that interrupts the statement


class Backend:
    """A database dbguard has no special support for: queries are recorded, nothing more."""

    vendor = "other"
    timeout = TIMEOUT_NONE
    explains = False  # EXPLAIN each query shape once (missing-index)
    samples_locks = False  # the stress watchdog reads the server's lock table and cancels

    def cancelled_by_timeout(self, error: str, sqlstate: str | None) -> bool:
        """Whether a failed statement was cancelled by dbguard's query timeout."""
        return False

    def close(self, connection: Any) -> None:
        """Close a Django connection for good (the stress runner's threads end with this)."""
        connection.close()


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
