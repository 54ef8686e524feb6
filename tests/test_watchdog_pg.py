"""The stress watchdog signals a pid only while it is still the backend it first saw."""

from __future__ import annotations

import datetime
import threading

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pytest_dbguard.stress.watchdog import Backend, BackendRegistry, Watchdog


def watched(pg_server, conn):
    params = {k: v for k, v in conninfo_to_dict(pg_server.dsn).items() if v is not None}
    registry = BackendRegistry()
    pid = conn.info.backend_pid
    registry.add(Backend(pid=pid, thread=0, ident=threading.get_ident(), alias="default",
                         round=0))
    watchdog = Watchdog(params, registry, site_of=lambda frame: None)
    assert watchdog.start() is None
    watchdog.begin_round(0, 0.0)
    watchdog.sample()
    return watchdog, pid


def alive(conn) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def test_terminates_the_backend_it_saw(pg_server):
    conn = psycopg.connect(pg_server.dsn, autocommit=True)
    watchdog, pid = watched(pg_server, conn)
    try:
        datname, started = watchdog.identities[pid]
        assert datname == conninfo_to_dict(pg_server.dsn).get("dbname", datname)
        assert watchdog.terminate([pid]) == [pid]
        assert not alive(conn)
    finally:
        watchdog.stop()
        conn.close()


def test_a_reused_pid_is_left_alone(pg_server):
    conn = psycopg.connect(pg_server.dsn, autocommit=True)
    watchdog, pid = watched(pg_server, conn)
    try:
        datname, started = watchdog.identities[pid]
        # what a reused pid looks like: same number, another session start or database
        watchdog.identities[pid] = (datname, started - datetime.timedelta(seconds=1))
        assert watchdog.terminate([pid]) == []
        watchdog.identities[pid] = ("someone_elses_db", started)
        assert watchdog.cancel([pid]) == [] and watchdog.terminate([pid]) == []
        assert alive(conn)
        # a pid the watchdog never saw is never signalled
        del watchdog.identities[pid]
        assert watchdog.terminate([pid]) == []
        assert alive(conn)
    finally:
        watchdog.stop()
        conn.close()
