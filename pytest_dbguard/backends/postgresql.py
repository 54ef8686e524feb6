"""PostgreSQL: server-side query timeouts, EXPLAIN, lock sampling, SQLSTATEs of cancellations."""

from __future__ import annotations

from typing import Any

from . import TIMEOUT_SETTING, Backend

# The SQLSTATEs of a statement cancelled by statement_timeout (57014) or lock_timeout (55P03).
TIMEOUT_STATES = ("57014", "55P03")


class PostgreSQL(Backend):
    vendor = "postgresql"
    timeout = TIMEOUT_SETTING
    explains = True
    samples_locks = True

    def cancelled_by_timeout(self, error: str, sqlstate: str | None) -> bool:
        return sqlstate in TIMEOUT_STATES and "timeout" in error

    def in_failed_transaction(self, raw: Any) -> bool:
        """The driver connection is in an aborted transaction: no statement can run on it."""
        info = getattr(raw, "info", None)
        status = getattr(info, "transaction_status", None)
        if status is not None:  # psycopg 3: TransactionStatus.INERROR
            return int(status) == 3
        get_status = getattr(raw, "get_transaction_status", None)
        return bool(get_status and get_status() == 4)  # psycopg2 TRANSACTION_STATUS_INERROR

    def timeout_values(self, ms: int) -> tuple[str, ...]:
        return (f"{ms}ms", f"{ms}ms")

    def read_timeouts(self, cursor: Any) -> tuple[str, ...]:
        cursor.execute("SELECT current_setting('statement_timeout'), "
                       "current_setting('lock_timeout')")
        return tuple(cursor.fetchone())

    def write_timeouts(self, cursor: Any, values: tuple[str, ...]) -> None:
        cursor.execute("SELECT set_config('statement_timeout', %s, false), "
                       "set_config('lock_timeout', %s, false)", values)
