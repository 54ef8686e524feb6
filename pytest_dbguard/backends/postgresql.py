"""PostgreSQL: query timeouts, EXPLAIN, lock sampling, census, SQLSTATEs, deadlock errors,
session state a transaction pooler loses, and the plugin's own connections (connect keys)."""

from __future__ import annotations

import re
from typing import Any

from . import TIMEOUT_SETTING, Backend, LockMonitor, MonitorUnavailable, SessionSample

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

# The stress watchdog's sample of the watched backends: activity, blockers, the lock waited for.
_WATCHDOG_SQL = """
SELECT a.pid, a.state, a.wait_event_type, a.query,
       extract(epoch FROM a.query_start)::float8 AS query_start,
       pg_blocking_pids(a.pid) AS blockers,
       w.locktype, w.mode, w.relation::regclass::text AS relation,
       w.transactionid::text AS xid, w.page AS w_page, w.tuple AS w_tuple,
       {wait_s} AS wait_s,
       t.relation::regclass::text AS row_relation, t.page, t.tuple,
       a.datname, a.backend_start,
       a.state = 'active' AND {settled} AS settled
FROM pg_stat_activity a
LEFT JOIN LATERAL (SELECT * FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted LIMIT 1) w
       ON true
LEFT JOIN LATERAL (SELECT * FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'tuple'
                   LIMIT 1) t ON true
WHERE a.pid = ANY(%s)
"""
# pg_locks.waitstart exists from PostgreSQL 14; before that the first sample dates a wait.
_WAIT_S_14 = "extract(epoch FROM clock_timestamp() - w.waitstart)::float8"
# pg_stat_activity gives the query text, state and query_start from a snapshot taken once per
# transaction (at its first read), but wait_event_type and pg_blocking_pids() are read live, row
# by row: a backend that began to wait after the snapshot would pair its wait with the text of
# the statement before it (a BEGIN, say). A wait that began before this transaction did was
# already going on when the snapshot was taken, so the snapshot shows the statement that waits.
# (Before 14 the server cannot tell when a wait began; only the state is checked.)
_SETTLED_14 = "w.waitstart IS NOT NULL AND w.waitstart <= transaction_timestamp()"

# Cancels and terminates only a backend that is still the session first seen: a pid the server
# reused for someone else's connection has another backend_start (or database). The check and
# the signal are one statement, so nothing can change between them.
_SIGNAL_SQL = """
SELECT a.pid, {function}(a.pid)
FROM pg_stat_activity a
JOIN unnest(%s::int[], %s::text[], %s::timestamptz[]) AS seen(pid, datname, backend_start)
  ON a.pid = seen.pid AND a.datname = seen.datname AND a.backend_start = seen.backend_start
"""

# The lock sampler outside stress mode: backends of the test database waiting on a lock. The
# activity row is a snapshot and the wait event live (see _SETTLED_14): a waiter must also be
# active in the snapshot, so an idle backend's last statement is never taken for the waiting one.
_LOCK_WAITS_SQL = """
SELECT w.pid, w.query, extract(epoch FROM clock_timestamp() - w.query_start) * 1000,
       b.pid, b.state, b.query
FROM pg_stat_activity w
CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocking(pid)
JOIN pg_stat_activity b ON b.pid = blocking.pid
WHERE w.datname = ANY(%s) AND w.wait_event_type = 'Lock' AND w.state = 'active'
  AND w.pid <> pg_backend_pid()
"""

# The census: client backends of the test database(s) that started since the test began.
_CENSUS_SQL = """
SELECT pid, datname, state, application_name, backend_start
FROM pg_stat_activity
WHERE datname = ANY(%s) AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND backend_start >= to_timestamp(%s)
  -- the plugin's own monitors (lock sampler, watchdog) connect to `postgres`, which an alias
  -- may name too: never the test's connections
  AND application_name NOT LIKE 'pytest-dbguard %%'
ORDER BY backend_start, pid
"""

# Session state a transaction pooler (PgBouncer transaction mode) does not carry between
# transactions: (pattern on the normalised SQL, what it is, the fix).
_SESSION_STATE = (
    (re.compile(r"^SET\s+(?!LOCAL\b)(?!TRANSACTION\b)(?:SESSION\s+)?(?!CONSTRAINTS\b)", re.I),
     "session-level SET", "use SET LOCAL inside a transaction (or set it per role/database)"),
    (re.compile(r"\bset_config\s*\([^)]*,\s*FALSE\s*\)", re.I), "session-level set_config()",
     "pass is_local => true inside a transaction"),
    (re.compile(r"\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.I),
     "session advisory lock",
     "use pg_advisory_xact_lock(), which is released at the end of the transaction"),
    (re.compile(r"^LISTEN\b", re.I), "LISTEN",
     "run LISTEN on a dedicated direct connection, not through the pooler"),
    (re.compile(r"\bWITH\s+HOLD\b", re.I), "WITH HOLD cursor",
     "use a cursor without WITH HOLD inside a transaction"),
    (re.compile(r"^PREPARE\b", re.I), "server-side prepared statement",
     "do not PREPARE statements by hand; let the driver manage prepares (or set "
     "prepare_threshold=None for psycopg behind PgBouncer < 1.21)"),
)
PREPARED = ("server-side prepared statement (execute(..., prepare=True))",
            "leave prepare to psycopg's prepare_threshold and run it with prepare_threshold=None "
            "behind PgBouncer < 1.21 (or enable max_prepared_statements on PgBouncer >= 1.21)")


class PostgreSQL(Backend):
    vendor = "postgresql"
    timeout = TIMEOUT_SETTING
    explains = True
    samples_locks = True
    takes_census = True

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

    def pooler_unsafe(self, fingerprint: str, prepared: bool = False) -> tuple[str, str] | None:
        found = next(((what, fix) for pattern, what, fix in _SESSION_STATE
                      if pattern.search(fingerprint)), None)
        return PREPARED if found is None and prepared else found

    # -- the plugin's own connections ------------------------------------------------------
    def lock_monitor(self, params: dict[str, Any], application_name: str,
                     statement_timeout_ms: int, connect_timeout_s: int) -> LockMonitor:
        try:
            import psycopg
        except ImportError:
            raise MonitorUnavailable(
                "lock analysis needs psycopg 3 for the watchdog's own connection: "
                "pip install 'pytest-dbguard[postgres]'") from None
        try:
            conn = psycopg.connect(autocommit=True, connect_timeout=connect_timeout_s,
                                   application_name=application_name, **params)
            conn.execute(f"SET statement_timeout = {statement_timeout_ms}")
            conn.execute(f"SET lock_timeout = {statement_timeout_ms // 2}")
            row = conn.execute("SHOW server_version_num").fetchone()
            version = int(row[0]) if row else 0
        except Exception as exc:
            # the class and SQLSTATE only: a driver message could name hosts and users
            state = sqlstate_of(exc)
            raise MonitorUnavailable(
                f"lock analysis is off: the watchdog could not connect to PostgreSQL "
                f"({type(exc).__name__}{', SQLSTATE ' + state if state else ''})") from None
        return Watch(conn, version)

    def monitor_connection(self, settings_dict: dict[str, Any], application_name: str) -> Any:
        import psycopg

        return psycopg.connect(**monitor_connect_kwargs(settings_dict, application_name))

    def lock_waits(self, conn: Any, databases: list[str]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in conn.execute(_LOCK_WAITS_SQL, (databases,)).fetchall()]

    def census(self, conn: Any, databases: list[str], since: float) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in conn.execute(_CENSUS_SQL, (databases, since)).fetchall()]

    def server_clock(self, conn: Any) -> float | None:
        row = conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()
        return float(row[0]) if row else None


class Watch(LockMonitor):
    """The stress watchdog's connection: autocommit, its own statement and lock timeouts."""

    def __init__(self, conn: Any, version: int) -> None:
        self.conn = conn
        modern = version >= 140000
        self.sql = _WATCHDOG_SQL.format(wait_s=_WAIT_S_14 if modern else "NULL",
                                        settled=_SETTLED_14 if modern else "true")

    def sample(self, pids: list[int]) -> list[SessionSample]:
        out = []
        for row in self.conn.execute(self.sql, (pids,)).fetchall():
            (pid, state, wait_type, query, query_start, blockers, locktype, mode, relation,
             xid, w_page, w_tuple, wait_s, row_relation, page, tup, datname, started,
             settled) = row
            # a backend counts as waiting only when the live reads (a Lock wait, blockers)
            # agree and its wait was settled before the activity snapshot (see _SETTLED_14),
            # so a stale activity row never becomes a side of a deadlock or a lock wait; a
            # wait too new for this sample is seen by the next one
            waiting = bool(blockers) and wait_type == "Lock" and bool(settled)
            waits_for = None
            if waiting:
                waits_for = {
                    "locktype": locktype,
                    "mode": mode,
                    "object": _lock_object(locktype, relation, xid, w_page, w_tuple),
                    "relation": relation or row_relation,
                    "row": f"({page},{tup})" if page is not None else (
                        f"({w_page},{w_tuple})" if w_page is not None else None),
                }
            out.append(SessionSample(
                pid=pid, state=state, sql=query or None,
                statement_start=float(query_start or 0.0),
                blocked_by=tuple(int(b) for b in blockers) if waiting else (),
                waits_for=waits_for, wait_s=wait_s, database=datname, session_start=started))
        return out

    def signal(self, terminate: bool, seen: list[tuple[int, str, Any]]) -> list[int]:
        function = "pg_terminate_backend" if terminate else "pg_cancel_backend"
        rows = self.conn.execute(
            _SIGNAL_SQL.format(function=function),
            ([pid for pid, _, _ in seen], [datname for _, datname, _ in seen],
             [started for _, _, started in seen]),
        ).fetchall()
        return [int(pid) for pid, ok in rows if ok]

    def close(self) -> None:
        self.conn.close()


def _lock_object(locktype: str | None, relation: str | None, xid: str | None,
                 page: int | None, tup: int | None) -> str | None:
    if locktype == "transactionid":
        return f"transaction {xid}"
    if locktype == "tuple":
        return f"tuple ({page},{tup}) of relation {relation}"
    if locktype == "relation":
        return f"relation {relation}"
    return locktype


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
