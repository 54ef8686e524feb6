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


def test_a_wait_newer_than_the_activity_snapshot_is_not_paired_with_its_old_text(pg_server):
    """pg_stat_activity is a snapshot, the wait event and blockers are live: replayed here
    deterministically by reading the snapshot first in the monitor's own transaction."""
    from pytest_dbguard.backends.postgresql import Watch

    table = f"dbguard_watch_{threading.get_ident()}"
    holder = psycopg.connect(pg_server.dsn, autocommit=True)
    waiter = psycopg.connect(pg_server.dsn, autocommit=True)
    monitor = psycopg.connect(pg_server.dsn)  # not autocommit: one snapshot per transaction
    probe = psycopg.connect(pg_server.dsn, autocommit=True)
    blocked = threading.Thread(target=lambda: waiter.execute(f"SELECT * FROM {table}"))
    try:
        version = int(monitor.execute("SHOW server_version_num").fetchone()[0])
        assert version >= 140000, "the test server runs PostgreSQL 15"
        monitor.rollback()
        holder.execute(f"CREATE TABLE {table} (id int)")
        waiter_pid = waiter.info.backend_pid
        waiter.execute("SELECT 'the statement before'")
        holder.execute("BEGIN")
        holder.execute(f"LOCK TABLE {table}")
        watch = Watch(monitor, version)
        # the snapshot: the waiter is idle, its last statement the SELECT
        [before] = watch.sample([waiter_pid])
        assert before.blocked_by == () and before.sql == "SELECT 'the statement before'"
        blocked.start()
        for _ in range(500):
            row = probe.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                (waiter_pid,)).fetchone()
            if row and row[0] == "Lock":
                break
            threading.Event().wait(0.01)
        else:
            raise AssertionError("the SELECT never started waiting")
        # same transaction, same snapshot: live reads say it waits, the text is the old one
        [stale] = watch.sample([waiter_pid])
        assert stale.sql == "SELECT 'the statement before'"
        assert stale.blocked_by == () and stale.waits_for is None
        monitor.rollback()  # a new snapshot shows the statement that waits
        [fresh] = watch.sample([waiter_pid])
        assert fresh.sql == f"SELECT * FROM {table}"
        assert fresh.blocked_by == (holder.info.backend_pid,)
        assert fresh.waits_for is not None and fresh.waits_for["object"] == f"relation {table}"
    finally:
        holder.execute("ROLLBACK")
        blocked.join(10)
        holder.execute(f"DROP TABLE IF EXISTS {table}")
        for conn in (holder, waiter, monitor, probe):
            conn.close()
