"""After open-transaction, dbguard restores the connection: the next test passes."""

from __future__ import annotations

from tests.lifecycle_support import run_json

RESTORED = ("dbguard rolled the transaction back, turned autocommit back on and cleared the "
            "atomic state on 'default' so that the next test starts clean")

POISON = """
import pytest
from django.db import connection, transaction
from shop.models import Author


@pytest.mark.django_db(transaction=True)
def test_a_autocommit_left_off():
    transaction.set_autocommit(False)
    Author.objects.create(id=1, name="a")


@pytest.mark.django_db(transaction=True)
def test_b_next_test_is_clean():
    assert connection.get_autocommit() and not connection.in_atomic_block
    Author.objects.create(id=1, name="b")
    assert Author.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_c_atomic_never_exited():
    transaction.atomic().__enter__()
    transaction.atomic().__enter__()
    Author.objects.create(id=1, name="c")


@pytest.mark.django_db(transaction=True)
def test_d_next_test_is_clean():
    assert connection.get_autocommit() and not connection.in_atomic_block
    assert connection.savepoint_ids == []
    Author.objects.create(id=1, name="d")
    assert Author.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_e_clean_transaction_is_left_alone():
    with transaction.atomic():
        Author.objects.create(id=1, name="e")
"""

WRAPPED = """
import pytest
from django.db import connection, transaction
from shop.models import Author


@pytest.mark.django_db
def test_a_inner_atomic_never_exited():
    transaction.atomic().__enter__()
    Author.objects.create(id=1, name="a")


@pytest.mark.django_db
def test_b_next_test_is_clean():
    assert len(connection.savepoint_ids) == 0
    Author.objects.create(id=1, name="b")
    assert Author.objects.count() == 1
"""


def test_open_transaction_is_undone_for_the_next_test(djproject, backend):
    djproject.write_test(POISON)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=5, errors=2)
    [left_off] = findings["test_a_autocommit_left_off"]
    assert left_off["rule"] == "open-transaction"
    assert left_off["lines"] == [
        "Django connection 'default' of the test thread: autocommit is off at the end of the "
        "test body: transaction.set_autocommit(False) was never undone", RESTORED]
    [never_exited] = findings["test_c_atomic_never_exited"]
    assert never_exited["lines"] == [
        "Django connection 'default' of the test thread: atomic depth is 2 at the end of the "
        "test body, 0 when it began: an atomic block was entered and never exited", RESTORED]
    for clean in ("test_b_next_test_is_clean", "test_d_next_test_is_clean",
                  "test_e_clean_transaction_is_left_alone"):
        assert findings[clean] == [], clean
    out = result.stdout.str()
    errors_section = out.split("= ERRORS =")[1].split("= dbguard =")[0]
    assert errors_section.count("[dbguard:open-transaction]") == 2
    assert "IntegrityError" not in out


def test_atomic_left_inside_pytest_django_transaction(djproject, backend):
    djproject.write_test(WRAPPED)
    result, findings = run_json(djproject)
    result.assert_outcomes(passed=2, errors=1)
    [finding] = findings["test_a_inner_atomic_never_exited"]
    assert finding["rule"] == "open-transaction"
    assert finding["lines"][-1] == (
        "dbguard closed the 1 atomic block(s) the test left open (the enclosing transaction "
        "rolls back) on 'default' so that the next test starts clean")
    assert findings["test_b_next_test_is_clean"] == []


def test_restore_is_off_with_the_rules(djproject):
    djproject.write_test(POISON)
    result = djproject.run("-p", "no:randomly", "--dbguard-rule", "open-transaction=off",
                           "--dbguard-rule", "swallowed-db-error=off", "-k", "test_a or test_b")
    # without the rules nothing is judged nor undone: the next test meets the open transaction
    result.assert_outcomes(passed=1, failed=1)
