"""The connection ledger, typed entries and what the recorder makes of them, and the typed
lifecycle facts the connection-leak and open-transaction rules read."""

from __future__ import annotations

import pytest

from pytest_dbguard.events import CallSite
from pytest_dbguard.facts import ConnectionState, ThreadConnection
from pytest_dbguard.recording.ledger import LedgerEntry
from pytest_dbguard.recording.recorder import Hub
from pytest_dbguard.rules.lifecycle import (
    HINT_THREAD,
    check_connection_leak,
    check_open_transaction,
    describe_state,
)
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

SITE = CallSite("shop/workers.py", 12, "work")


def entry(closed: bool = False, **fields) -> LedgerEntry:
    values = dict(kind="django", alias="default", vendor="postgresql", thread="worker-1",
                  phase="call", pid=4242, site=SITE, shared=False,
                  is_closed=lambda: closed)
    values.update(fields)
    return LedgerEntry(**values)


def test_entries_have_slots_and_django_defaults():
    conn = entry()
    assert not hasattr(conn, "__dict__")
    assert (conn.thread_ident, conn.thread_ref, conn.via, conn.closable, conn.wrapper) == (
        None, None, None, True, None)


def test_the_record_lists_each_entry_with_whether_it_is_closed():
    recorder = Hub().start_test("tests/test_x.py::test_x")
    recorder.connections.append(entry(closed=False))
    recorder.connections.append(entry(closed=True, alias="other", pid=None, site=None))
    events = recorder.record().connections
    assert [(e.alias, e.backend_pid, e.call_site, e.closed, e.opened_in_phase)
            for e in events] == [("default", 4242, SITE, False, "call"),
                                 ("other", None, None, True, "call")]
    assert events[0].to_dict()["call_site"] == "shop/workers.py:12"


@pytest.mark.parametrize(("state", "described"), [
    (None, "idle"),
    (ConnectionState("default", "postgresql", open=True, driver="idle"), "idle"),
    (ConnectionState("default", "postgresql", open=True, depth=1), "idle in transaction"),
    (ConnectionState("default", "postgresql", open=True, autocommit=False),
     "idle in transaction"),
    (ConnectionState("default", "postgresql", open=True, driver="in transaction"),
     "idle in transaction"),
    (ConnectionState("default", "postgresql", open=True, depth=1, driver="in error"),
     "idle in transaction (aborted)"),
])
def test_connection_states_are_named_as_postgresql_names_them(state, described):
    assert describe_state(state) == described


# -- the lifecycle facts typed: other threads' connections and the test thread's transactions ---

def thread_connection(open_: bool = True, state: ConnectionState | None = None,
                      **fields) -> ThreadConnection:
    values = dict(alias="default", vendor="postgresql", thread="worker-1", thread_alive=False,
                  phase="call", pid=4242, site="shop/workers.py:12", via=None, open=open_,
                  state=state)
    values.update(fields)
    return ThreadConnection(**values)


def lifecycle(connections=(), setup=(), call=()) -> dict:
    return {"txstate": {"setup": list(setup), "call": list(call)}, "errors": [],
            "connections": list(connections), "test_ident": 1}


def test_another_threads_connection_left_open_is_a_leak_and_a_closed_one_is_not():
    idle = ConnectionState("default", "postgresql", open=True, driver="idle")
    record = RecordBuilder().fact("lifecycle", lifecycle([
        thread_connection(state=idle),
        thread_connection(open_=False, thread="worker-2", pid=4343)])).build()
    [finding] = check_connection_leak(record, context())
    assert finding.evidence["lines"] == [
        "Django connection 'default' (postgresql) of thread worker-1 (exited), backend pid "
        "4242, idle: opened at shop/workers.py:12 during call"]
    assert finding.hint == HINT_THREAD
    closed = RecordBuilder().fact("lifecycle", lifecycle([thread_connection(open_=False)]))
    assert list(check_connection_leak(closed.build(), context())) == []


def test_an_atomic_block_the_body_left_open_is_an_open_transaction_but_the_fixtures_is_not():
    fixture_tx = ConnectionState("default", "sqlite", open=True, depth=1, autocommit=False)
    left_open = ConnectionState("default", "sqlite", open=True, depth=2, autocommit=False)
    record = RecordBuilder().fact("lifecycle", lifecycle(setup=[fixture_tx],
                                                         call=[left_open])).build()
    [finding] = check_open_transaction(record, context())
    assert finding.evidence["lines"] == [
        "Django connection 'default' of the test thread: atomic depth is 2 at the end of the "
        "test body, 1 when it began: an atomic block was entered and never exited"]
    same = RecordBuilder().fact("lifecycle", lifecycle(setup=[fixture_tx], call=[fixture_tx]))
    assert list(check_open_transaction(same.build(), context())) == []
