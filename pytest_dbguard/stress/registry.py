"""The backends a stress run opened: the only ones the watchdog ever inspects or cancels.

The stress runner adds each backend a stressed thread's Django connection opens; the watchdog
samples only the pids listed here, and cancels or terminates only those (never the main
thread's, never a session it did not see opening).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

MAIN_THREAD = -1


@dataclass(frozen=True)
class Backend:
    """A database backend (session) a stressed thread opened (thread -1: the test's main thread)."""

    pid: int
    thread: int
    ident: int
    alias: str
    round: int


class BackendRegistry:
    """The backends the stress run opened: the only ones the watchdog inspects or cancels."""

    def __init__(self) -> None:
        self._by_pid: dict[int, Backend] = {}
        self._conn_pids: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, backend: Backend, connection: Any = None) -> None:
        with self._lock:
            self._by_pid[backend.pid] = backend
            if connection is not None:
                self._conn_pids[id(connection)] = backend.pid

    def pid_of(self, connection: Any) -> int | None:
        """The backend pid of a Django connection object the registry saw opening."""
        with self._lock:
            return self._conn_pids.get(id(connection))

    def get(self, pid: int) -> Backend | None:
        return self._by_pid.get(pid)

    def of_round(self, index: int) -> list[Backend]:
        with self._lock:
            return [b for b in self._by_pid.values() if b.round == index]

    def watched(self, index: int) -> list[Backend]:
        with self._lock:
            return [b for b in self._by_pid.values()
                    if b.round == index or b.thread == MAIN_THREAD]
