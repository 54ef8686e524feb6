"""Connection states read the cheap way must equal the generic reading, and be shared."""

from __future__ import annotations

import sqlite3

import pytest

from pytest_dbguard.facts import ConnectionState
from pytest_dbguard.recording.connstates import States, _any_driver, _reader_for, state_fields
from pytest_dbguard.recording.restore import _left_open

pytestmark = pytest.mark.unit


class Wrapper:
    """The attributes of a Django connection object that a state reads."""

    def __init__(self, raw, depth=0, autocommit=True, needs_rollback=False):
        self.connection = raw
        self.atomic_blocks = [object()] * depth
        self.alias, self.vendor = "default", "sqlite"
        self.autocommit, self.needs_rollback = autocommit, needs_rollback


def test_sqlite3_reader_answers_as_the_generic_one():
    raw = sqlite3.connect(":memory:")
    try:
        read = _reader_for(type(raw))
        assert read is not _any_driver
        assert read(raw) == _any_driver(raw) == ("idle", None)
        raw.execute("CREATE TABLE t (x int)")
        raw.execute("INSERT INTO t VALUES (1)")  # the module opens a transaction for DML
        assert read(raw) == _any_driver(raw) == ("in transaction", None)
    finally:
        raw.close()


def test_other_drivers_keep_the_generic_reader():
    assert _reader_for(object) is _any_driver


def test_equal_states_are_one_object_and_a_changed_state_is_not():
    raw = sqlite3.connect(":memory:")
    try:
        states = States()
        wrapper = Wrapper(raw, depth=1, autocommit=False)
        first = states.of(wrapper)
        assert first == ConnectionState("default", "sqlite", True, 1, False, False, "idle", None)
        assert states.of(wrapper) is first
        wrapper.autocommit = True
        assert states.of(wrapper) is not first
        assert state_fields(Wrapper(None)) == ("default", "sqlite", False, 0, False, True,
                                               None, None)
    finally:
        raw.close()


@pytest.mark.parametrize(("start", "end", "left"), [
    (0, ConnectionState("d", "sqlite", True), False),
    (0, ConnectionState("d", "sqlite", True, autocommit=False), True),
    (0, ConnectionState("d", "sqlite", True, depth=1, autocommit=False), True),
    (0, ConnectionState("d", "sqlite", True, driver="in transaction"), True),
    (1, ConnectionState("d", "sqlite", True, depth=1, autocommit=False), False),
    (1, ConnectionState("d", "sqlite", True, depth=2, autocommit=False), True),
])
def test_restore_decides_from_the_states_alone(start, end, left):
    assert _left_open(start, end) is left
