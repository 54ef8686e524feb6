"""swallowed-db-error over hand-built lifecycle facts: errors caught inside their own block."""

from __future__ import annotations

import pytest

from pytest_dbguard.facts import BlockExit, CaughtDbError, ConnectionState
from pytest_dbguard.rules.swallowed import HINT_SWALLOWED, check_swallowed_db_error
from tests.records import RecordBuilder, context

pytestmark = pytest.mark.unit

ROLLED_BACK = "rolled back at its exit, silently undoing every write made in it"


def error(exc_id: int = 1, caught_by: str = "code", in_block: BlockExit | None = None,
          site: str = "shop/imports.py:9") -> CaughtDbError:
    return CaughtDbError(exc_id=exc_id, type="IntegrityError",
                         message="UNIQUE constraint failed", sqlstate=None,
                         sql='INSERT INTO "shop_author" ...', site=site, alias="default",
                         thread_ident=1, thread="MainThread", caught_in="import_rows",
                         caught_at="shop/imports.py:10", caught_by=caught_by, in_block=in_block)


def judge(*errors: CaughtDbError, raised: dict | None = None) -> list:
    builder = RecordBuilder().fact("lifecycle", {"errors": list(errors), "txstate": {},
                                                 "test_ident": 1})
    if raised is not None:
        builder.fact("raised", raised)
    return list(check_swallowed_db_error(builder.build(), context()))


BLOCK = BlockExit("shop/imports.py:6", ROLLED_BACK)


def test_error_caught_inside_its_block_fires_with_the_block_and_the_catcher():
    [finding] = judge(error(in_block=BLOCK))
    assert finding.message == (
        "1 database error was caught inside the atomic block at shop/imports.py:6 "
        f"(on 'default') instead of outside it: the block {ROLLED_BACK}")
    assert finding.evidence["lines"] == [
        "IntegrityError: UNIQUE constraint failed",
        '    from INSERT INTO "shop_author" ... at shop/imports.py:9; caught and not re-raised '
        "in import_rows() at shop/imports.py:10"]
    assert finding.hint == HINT_SWALLOWED


def test_two_errors_in_one_block_make_one_finding():
    [finding] = judge(error(1, in_block=BLOCK), error(2, in_block=BLOCK, site="shop/x.py:3"))
    assert finding.message.startswith("2 database errors were caught inside the atomic block")
    assert len(finding.evidence["lines"]) == 4


def test_the_failure_it_explains_is_named():
    [finding] = judge(error(in_block=BLOCK),
                      raised={"type": "TransactionManagementError", "exc_ids": [99, 1]})
    assert finding.message.endswith(
        f"{ROLLED_BACK}; the test then failed with TransactionManagementError, which this "
        f"explains")


def test_error_caught_by_the_test_is_not_a_finding():
    assert judge(error(caught_by="test", in_block=BLOCK)) == []


def test_error_that_left_its_block_is_not_a_finding():
    # no in_block: it propagated out of its block, which rolled back; the connection is clean
    assert judge(error()) == []


def test_error_caught_outside_its_block_fires_while_the_transaction_needs_rollback():
    broken = ConnectionState("default", "sqlite", open=True, depth=1, needs_rollback=True,
                             autocommit=False)
    facts = {"errors": [error()], "txstate": {"call": [broken]}, "test_ident": 1}
    [finding] = check_swallowed_db_error(RecordBuilder().fact("lifecycle", facts).build(),
                                         context())
    assert finding.message == (
        "1 database error was caught inside atomic and the transaction on 'default' was left "
        "unusable (needs_rollback); the next query in it fails")
    clean = ConnectionState("default", "sqlite", open=True, depth=1, autocommit=False)
    facts = {"errors": [error()], "txstate": {"call": [clean]}, "test_ident": 1}
    assert list(check_swallowed_db_error(RecordBuilder().fact("lifecycle", facts).build(),
                                         context())) == []
