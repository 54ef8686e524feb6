"""The psycopg probe's notes about one test turned into PsycopgFacts, and its leaks closed."""

from __future__ import annotations

import contextlib
import weakref
from typing import Any

from ..facts import (
    PoolCheckout,
    PoolState,
    PoolTimeout,
    PsycopgFacts,
    RawConnection,
    RawStatement,
    RawWrite,
    RefusedConnection,
)
from .driver import driver_status

# (phase, sql, site, thread, prepared) -> count
StatementCounts = dict[tuple[str, str, str | None, str, bool], int]
# the facts of a test whose code under test used no raw connection: one object for the session
NO_FACTS = PsycopgFacts()


def running_facts(test: dict[str, Any], statements: StatementCounts,
                  writes: tuple[RawWrite, ...]) -> PsycopgFacts:
    """What is known while the test runs: connections and pools are judged after teardown."""
    return PsycopgFacts(timeouts=_timeouts(test), refused=_refused(test),
                        statements=_statements(statements), writes=writes)


def frozen_facts(test: dict[str, Any], statements: StatementCounts,
                 writes: tuple[RawWrite, ...]) -> PsycopgFacts:
    """Everything, with whether each connection, checkout and pool is still open."""
    connections: list[RawConnection] = []
    for entry in test.get("connections", ()):
        if entry["shared"]:
            continue
        conn = entry["ref"]()
        is_open = conn is not None and not conn.closed
        connections.append(RawConnection(
            kind=entry["kind"], thread=entry["thread"], phase=entry["phase"],
            pid=entry["pid"], site=entry["site"], open=is_open,
            driver=driver_status(conn) if is_open else None,
        ))
    checkouts: list[PoolCheckout] = []
    for checkout in test.get("checkouts", ()):
        if checkout["shared"]:
            continue
        conn = checkout["conn_ref"]()
        checkouts.append(PoolCheckout(
            **{key: checkout[key] for key in ("pool", "phase", "site", "thread", "pid",
                                              "returned")},
            open=conn is not None and not conn.closed))
    pools: list[PoolState] = []
    for pool_entry in test.get("pools", ()):
        pool = pool_entry["ref"]()
        pools.append(PoolState(
            name=pool_entry["name"], phase=pool_entry["phase"],
            site=pool_entry["site"], max_size=pool_entry["max_size"],
            open=pool is not None and not pool.closed,
        ))
    return PsycopgFacts(
        connections=tuple(connections),
        checkouts=tuple(checkouts),
        pools=tuple(pools),
        timeouts=_timeouts(test),
        refused=_refused(test),
        statements=_statements(statements),
        writes=writes,
    )


def close_leaked(test: dict[str, Any]) -> None:
    """Close what the test left open once the facts about it are frozen (best effort).

    The connection-leak finding is already decided by then; closing lets pytest-django drop
    the test database, and a later test that leaks again is reported on its own.
    """
    for checkout in test.get("checkouts", ()):
        conn, pool = checkout["conn_ref"](), checkout["pool_ref"]()
        if checkout["shared"] or checkout["returned"] or conn is None or conn.closed:
            continue
        with contextlib.suppress(Exception):
            if pool is not None and not pool.closed:
                pool.putconn(conn)
            else:
                conn.close()
    for entry in test.get("connections", ()):
        conn = entry["ref"]()
        if not entry["shared"] and conn is not None and not conn.closed:
            with contextlib.suppress(Exception):
                conn.close()
    for pool_entry in test.get("pools", ()):
        pool = pool_entry["ref"]()
        if pool is not None and not pool.closed:
            with contextlib.suppress(Exception):
                pool.close(timeout=1.0)


def raw_closed(ref: weakref.ref[Any]) -> bool:
    conn = ref()
    return conn is None or bool(conn.closed)


def _statements(seen: StatementCounts) -> tuple[RawStatement, ...]:
    return tuple(RawStatement(phase, sql, site, thread, prepared, count)
                 for (phase, sql, site, thread, prepared), count in seen.items())


def _timeouts(test: dict[str, Any]) -> tuple[PoolTimeout, ...]:
    return tuple(PoolTimeout(**{**event, "checked_out_here": tuple(event["checked_out_here"])})
                 for event in test.get("timeouts", ()))


def _refused(test: dict[str, Any]) -> tuple[RefusedConnection, ...]:
    return tuple(RefusedConnection(**event) for event in test.get("refused", ()))
