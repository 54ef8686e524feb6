"""PostgreSQL: query timeouts, EXPLAIN, lock sampling, SQLSTATEs, deadlock errors, connect keys."""

from __future__ import annotations

import re
from typing import Any

from . import TIMEOUT_SETTING, Backend

DEADLOCK = "40P01"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"

# libpq connection keys Django passes through OPTIONS that the watchdog needs too (TLS, service).
_LIBPQ_OPTIONS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl",
                  "service", "passfile", "target_session_attrs", "gssencmode", "channel_binding")
_DETAIL_RE = re.compile(r"Process (\d+) waits for (\w+) on (.+?); blocked by process (\d+)\.")
_CONTEXT_RE = re.compile(r'tuple \((\d+),(\d+)\) in relation "([^"]+)"')

# The SQLSTATEs of a statement cancelled by statement_timeout (57014) or lock_timeout (55P03).
TIMEOUT_STATES = (QUERY_CANCELED, LOCK_NOT_AVAILABLE)


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


def sqlstate_of(exc: BaseException | None) -> str | None:
    """The SQLSTATE of a database error, looking through Django's wrapping exceptions."""
    seen = 0
    while exc is not None and seen < 8:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state:
            return str(state)
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def parse_deadlock_detail(exc: BaseException) -> dict[str, Any]:
    """Who waited for what, from PostgreSQL's deadlock error (pids, lock modes, relation, row)."""
    texts: list[str] = []
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            break
        diag = getattr(current, "diag", None)
        texts.extend(str(t) for t in (getattr(diag, "message_detail", None),
                                      getattr(diag, "context", None)) if t)
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    text = "\n".join(texts)
    waits = []
    for match in _DETAIL_RE.finditer(text):
        wait = {"pid": int(match.group(1)), "mode": match.group(2), "object": match.group(3),
                "blocker": int(match.group(4))}
        if wait not in waits:
            waits.append(wait)
    context = _CONTEXT_RE.search(text)
    return {
        "waits": waits,
        "pids": sorted({w["pid"] for w in waits}),
        "relation": context.group(3) if context else None,
        "row": f"({context.group(1)},{context.group(2)})" if context else None,
    }


def connect_params(settings_dict: dict[str, Any]) -> dict[str, Any]:
    """psycopg keyword arguments for the test database Django is using (never printed)."""
    options = settings_dict.get("OPTIONS") or {}
    params: dict[str, Any] = {
        "dbname": settings_dict.get("NAME") or None,
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "host": settings_dict.get("HOST") or None,
        "port": str(settings_dict["PORT"]) if settings_dict.get("PORT") else None,
    }
    params.update({key: options[key] for key in _LIBPQ_OPTIONS if key in options})
    if "service" in params and not settings_dict.get("NAME"):
        params.pop("dbname")
    return {k: v for k, v in params.items() if v is not None}


def monitor_connect_kwargs(settings_dict: dict[str, Any], application_name: str) -> dict[str, Any]:
    """psycopg.connect() keywords for one of the plugin's own read-only connections (census,
    lock sampler) to the server's `postgres` database, from the test database's settings.

    Only libpq keys are taken from OPTIONS; the values are never printed.
    """
    from psycopg import pq

    keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    params: dict[str, Any] = {
        key: value for key, value in (settings_dict.get("OPTIONS") or {}).items()
        if key in keywords and key not in ("dbname", "options", "application_name")
    }
    for key, setting in (("user", "USER"), ("password", "PASSWORD"), ("host", "HOST"),
                         ("port", "PORT")):
        if settings_dict.get(setting):
            params[key] = str(settings_dict[setting])
    return dict(params, dbname="postgres", application_name=application_name, autocommit=True,
                connect_timeout=10,
                options="-c default_transaction_read_only=on -c statement_timeout=5000")
