"""The vendor seam: what each backend module says it can do, without a database."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pytest_dbguard.backends import (
    TIMEOUT_NONE,
    TIMEOUT_PROGRESS,
    TIMEOUT_SETTING,
    Backend,
    for_vendor,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("vendor", "timeout", "explains", "samples_locks"), [
    ("postgresql", TIMEOUT_SETTING, True, True),
    ("sqlite", TIMEOUT_PROGRESS, False, False),
    ("mysql", TIMEOUT_NONE, False, False),
    ("", TIMEOUT_NONE, False, False),
])
def test_capabilities(vendor, timeout, explains, samples_locks):
    backend = for_vendor(vendor)
    assert (backend.timeout, backend.explains, backend.samples_locks) == (
        timeout, explains, samples_locks)
    assert for_vendor(vendor) is backend  # one instance per vendor


@pytest.mark.parametrize(("vendor", "error", "sqlstate", "cancelled"), [
    ("postgresql", "canceling statement due to statement timeout", "57014", True),
    ("postgresql", "canceling statement due to lock timeout", "55P03", True),
    ("postgresql", "canceling statement due to user request", "57014", False),
    ("postgresql", "lock timeout", "40P01", False),
    ("sqlite", "interrupted", None, True),
    ("sqlite", "database is locked", None, False),
    ("mysql", "interrupted", None, False),
])
def test_cancelled_by_timeout(vendor, error, sqlstate, cancelled):
    assert for_vendor(vendor).cancelled_by_timeout(error, sqlstate) is cancelled


@pytest.mark.parametrize(("raw", "failed"), [
    (SimpleNamespace(info=SimpleNamespace(transaction_status=3)), True),
    (SimpleNamespace(info=SimpleNamespace(transaction_status=0)), False),
    (SimpleNamespace(get_transaction_status=lambda: 4), True),
    (SimpleNamespace(get_transaction_status=lambda: 0), False),
    (SimpleNamespace(), False),
])
def test_postgresql_failed_transaction_on_both_drivers(raw, failed):
    assert for_vendor("postgresql").in_failed_transaction(raw) is failed


class FakeCursor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def execute(self, sql: str, params: object = None) -> None:
        self.calls.append((sql, params))

    def fetchone(self) -> tuple[str, str]:
        return ("0", "1s")


def test_postgresql_timeouts_are_read_set_and_put_back():
    backend = for_vendor("postgresql")
    cursor = FakeCursor()
    previous = backend.read_timeouts(cursor)
    backend.write_timeouts(cursor, backend.timeout_values(250))
    backend.write_timeouts(cursor, previous)
    assert previous == ("0", "1s")
    assert [params for _, params in cursor.calls] == [None, ("250ms", "250ms"), ("0", "1s")]
    assert "set_config('statement_timeout', %s, false)" in cursor.calls[1][0]


def test_a_plain_backend_closes_the_connection():
    closed = []
    Backend().close(SimpleNamespace(close=lambda: closed.append(True)))
    assert closed == [True]
