"""What a DB-API connection object says about itself: transaction status, backend pid, refusal."""

from __future__ import annotations

from typing import Any

# libpq transaction status codes (psycopg.pq.TransactionStatus; psycopg2 uses the same numbers)
DRIVER_STATUS = {0: "idle", 1: "active", 2: "in transaction", 3: "in error", 4: "unknown"}

# SQLSTATE 53300 too_many_connections. libpq reports a refused connection as a message without a
# SQLSTATE, so the server's (English) wording is matched too.
TOO_MANY_CONNECTIONS = "53300"
_TOO_MANY_TEXTS = ("too many clients already", "too many connections for",
                   "remaining connection slots are reserved")


def driver_status(raw: Any) -> str | None:
    """The driver's view of the transaction: idle / in transaction / in error, or None."""
    info = getattr(raw, "info", None)
    status = getattr(info, "transaction_status", None)
    if status is None and hasattr(raw, "get_transaction_status"):  # psycopg2
        try:
            status = raw.get_transaction_status()
        except Exception:
            return None
    if status is not None:
        return DRIVER_STATUS.get(int(status), "unknown")
    in_transaction = getattr(raw, "in_transaction", None)  # sqlite3
    if isinstance(in_transaction, bool):
        return "in transaction" if in_transaction else "idle"
    return None


def backend_pid(raw: Any) -> int | None:
    info = getattr(raw, "info", None)
    try:
        pid = getattr(info, "backend_pid", None)
    except Exception:  # a closed psycopg connection
        return None
    return int(pid) if pid else None


def is_connection_refused(exc: BaseException) -> bool:
    if getattr(exc, "sqlstate", None) == TOO_MANY_CONNECTIONS:
        return True
    text = str(exc)
    return any(part in text for part in _TOO_MANY_TEXTS)
