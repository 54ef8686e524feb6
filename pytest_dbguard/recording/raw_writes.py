"""Writes that raw psycopg connections commit, for escaped-write (PostgreSQL only).

A write on a raw connection commits at once in autocommit, or later through `commit()`, the end
of a `transaction()` block or of a `with connection:` block (psycopg-pool's `pool.connection()`
ends with the latter). While the psycopg probe is installed, `Connection.commit` / `rollback`
and `Transaction.__enter__` / `__exit__` (and their async twins) are wrapped; they only look
further for connections the probe watches, so Django's own connections pay one dictionary
lookup per commit. After a write, libpq's transaction status tells whether it already committed
(idle: autocommit) or waits for the end of the transaction.

Writes to temporary tables are left out: the table goes with the session.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..facts import RawWrite

if TYPE_CHECKING:
    from .psycopg import PsycopgProbe

_WRITE_RE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|MERGE|CREATE|ALTER|DROP|TRUNCATE)\b",
                       re.IGNORECASE)
_NAME = r'("(?:[^"]|"")+"|[\w$]+)(?:\s*\.\s*("(?:[^"]|"")+"|[\w$]+))?'
_TEMP_CREATE_RE = re.compile(
    r"^\s*CREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    + _NAME, re.IGNORECASE)
_TARGET_RE = re.compile(
    r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|MERGE\s+INTO|TRUNCATE(?:\s+TABLE)?"
    r"|DROP\s+TABLE(?:\s+IF\s+EXISTS)?|ALTER\s+TABLE(?:\s+IF\s+EXISTS)?)\s+(?:ONLY\s+)?"
    + _NAME, re.IGNORECASE)
IDLE = 0  # libpq PQTRANS_IDLE: no transaction open after the statement
_OPEN = (2, 3)  # PQTRANS_INTRANS, PQTRANS_INERROR: a transaction is still open

AUTOCOMMIT = "committed at once (autocommit)"
BY_COMMIT = "committed by commit()"
BY_TRANSACTION = "committed when its transaction() block ended"
BY_WITH = "committed when its `with` block ended"


@dataclass
class _Watched:
    """One raw connection: how the report names it, and its writes waiting for a commit."""

    label: str
    pending: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)  # len(pending) when each block began
    temp: set[str] = field(default_factory=set)


def _table(match: re.Match[str]) -> str:
    schema, name = (match.group(1), match.group(2)) if match.group(2) else (None, match.group(1))

    def plain(part: str) -> str:
        return part[1:-1].replace('""', '"') if part.startswith('"') else part.lower()

    return f"{plain(schema)}.{plain(name)}" if schema else plain(name)


class RawWrites:
    """Follows the transactions of watched raw connections; collects the writes they commit."""

    def __init__(self, probe: PsycopgProbe) -> None:
        self.probe = probe
        self._conns: weakref.WeakKeyDictionary[Any, _Watched] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        # (phase, fingerprint, site, thread, connection, database, how) -> count, this test
        self.committed: dict[tuple[str, str, str | None, str, str, str, str], int] = {}
        self._psycopg_dir = ""

    def watch(self, conn: Any, label: str) -> None:
        with self._lock:
            if conn not in self._conns:
                self._conns[conn] = _Watched(label)

    def label_of(self, conn: Any) -> str:
        watched = self._conns.get(conn)
        return watched.label if watched is not None else "a raw psycopg connection"

    def take(self) -> tuple[RawWrite, ...]:
        return tuple(RawWrite(*key, count=n) for key, n in self.committed.items())

    # -- statements ----------------------------------------------------------------------------
    def wrote(self, conn: Any, sql: str, caller: Any) -> None:
        """After a statement ran on a watched connection: keep it if it is a write."""
        watched = self._conns.get(conn)
        if watched is None or not _WRITE_RE.match(sql):
            return
        temp = _TEMP_CREATE_RE.match(sql)
        if temp:
            watched.temp.add(_table(temp))
            return
        target = _TARGET_RE.match(sql)
        if target and (_table(target) in watched.temp or _table(target).startswith("pg_temp.")):
            return
        probe = self.probe
        active = probe.recording_test()
        if active is None:
            return
        shape = probe.hub.catalog.shapes[probe.hub.fingerprinter.index_of(sql)]
        write = (active[1], shape.fingerprint, probe.site_of(caller),
                 threading.current_thread().name)
        if _status(conn) == IDLE:
            self._commit(conn, watched, [write], AUTOCOMMIT)
        else:
            with self._lock:
                watched.pending.append(write)

    def _commit(self, conn: Any, watched: _Watched, writes: list[tuple[str, str, str | None, str]],
                how: str) -> None:
        database = _dbname(conn)
        with self._lock:
            for phase, sql, site, thread in writes:
                key = (phase, sql, site, thread, watched.label, database, how)
                self.committed[key] = self.committed.get(key, 0) + 1

    def _settle(self, conn: Any, committed: bool, how: str) -> None:
        watched = self._conns.get(conn)
        if watched is None:
            return
        with self._lock:
            writes, watched.pending, watched.marks = watched.pending, [], []
        if committed and writes:
            self._commit(conn, watched, writes, how)

    def _failed(self, conn: Any) -> None:
        """commit() or rollback() raised: a transaction still open (commit() refused inside a
        transaction() block) keeps its writes; otherwise nothing was committed."""
        if _status(conn) not in _OPEN:
            self._settle(conn, False, BY_COMMIT)

    def _block_began(self, conn: Any) -> None:
        watched = self._conns.get(conn)
        if watched is not None:
            with self._lock:
                watched.marks.append(len(watched.pending))

    def _block_ended(self, tx: Any) -> None:
        conn = tx.connection
        watched = self._conns.get(conn)
        if watched is None:
            return
        committed = getattr(getattr(tx, "status", None), "value", "") == "committed"
        if _status(conn) == IDLE:  # the block was the transaction: it committed or rolled back
            self._settle(conn, committed, BY_TRANSACTION)
            return
        with self._lock:  # a savepoint: released, or rolled back to
            mark = watched.marks.pop() if watched.marks else 0
            if not committed:
                del watched.pending[mark:]

    def _how(self, frame: Any) -> str:
        code = frame.f_code if frame is not None else None
        if (code is not None and code.co_name in ("__exit__", "__aexit__")
                and code.co_filename.startswith(self._psycopg_dir)):
            return BY_WITH
        return BY_COMMIT

    # -- installation ------------------------------------------------------------------------
    def install(self, psycopg: Any, replace: Any) -> None:
        """Wrap psycopg's transaction ends; `replace(owner, attr, value)` keeps the originals."""
        writes = self
        self._psycopg_dir = os.path.dirname(os.path.abspath(psycopg.__file__)) + os.sep
        for cls in (psycopg.Connection, psycopg.AsyncConnection):
            is_async = cls is psycopg.AsyncConnection
            for attr in ("commit", "rollback"):
                replace(cls, attr, _wrap_end(writes, cls.__dict__[attr], attr == "commit",
                                             is_async))
        tx_sync, tx_async = psycopg.Transaction, psycopg.AsyncTransaction
        enter, exit_ = tx_sync.__dict__["__enter__"], tx_sync.__dict__["__exit__"]
        aenter, aexit = tx_async.__dict__["__aenter__"], tx_async.__dict__["__aexit__"]

        def __enter__(tx: Any) -> Any:
            result = enter(tx)
            writes._block_began(tx.connection)
            return result

        def __exit__(tx: Any, *exc: Any) -> Any:
            try:
                return exit_(tx, *exc)
            finally:
                writes._block_ended(tx)

        async def __aenter__(tx: Any) -> Any:
            result = await aenter(tx)
            writes._block_began(tx.connection)
            return result

        async def __aexit__(tx: Any, *exc: Any) -> Any:
            try:
                return await aexit(tx, *exc)
            finally:
                writes._block_ended(tx)

        for owner, attr, value in ((tx_sync, "__enter__", __enter__),
                                   (tx_sync, "__exit__", __exit__),
                                   (tx_async, "__aenter__", __aenter__),
                                   (tx_async, "__aexit__", __aexit__)):
            replace(owner, attr, value)


def _wrap_end(writes: RawWrites, original: Any, commit: bool, is_async: bool) -> Any:
    """commit() / rollback() of a watched connection settle its pending writes."""
    if is_async:
        async def aend(conn: Any) -> None:
            if conn not in writes._conns:
                return await original(conn)  # type: ignore[no-any-return]
            how = writes._how(sys._getframe(1))
            try:
                await original(conn)
            except BaseException:
                writes._failed(conn)
                raise
            writes._settle(conn, commit, how)

        aend.__doc__ = original.__doc__
        return aend

    def end(conn: Any) -> None:
        if conn not in writes._conns:
            return original(conn)  # type: ignore[no-any-return]
        how = writes._how(sys._getframe(1))
        try:
            original(conn)
        except BaseException:
            writes._failed(conn)
            raise
        writes._settle(conn, commit, how)

    end.__doc__ = original.__doc__
    return end


def _status(conn: Any) -> int | None:
    try:
        return int(conn.pgconn.transaction_status)
    except Exception:
        return None


def _dbname(conn: Any) -> str:
    try:
        return str(conn.info.dbname)
    except Exception:
        return ""
