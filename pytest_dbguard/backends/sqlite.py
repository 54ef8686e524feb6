"""SQLite: query timeouts by progress handler, in-memory databases that must not be closed."""

from __future__ import annotations

from typing import Any

from . import TIMEOUT_PROGRESS, Backend


class SQLite(Backend):
    vendor = "sqlite"
    timeout = TIMEOUT_PROGRESS

    def cancelled_by_timeout(self, error: str, sqlstate: str | None) -> bool:
        # the progress handler's non-zero return makes sqlite3 raise "interrupted"
        return error.endswith("interrupted")

    def close(self, connection: Any) -> None:
        if connection.is_in_memory_db():
            # Django ignores close() on an in-memory database so as not to lose it; another
            # thread still holds this shared-cache database, this handle may go.
            from django.db.backends.base.base import BaseDatabaseWrapper

            BaseDatabaseWrapper.close(connection)
        else:
            connection.close()
