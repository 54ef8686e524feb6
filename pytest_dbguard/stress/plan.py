"""How a stress run stresses one test: its plan from the marker and the run's options."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .. import markers
from . import DEFAULT_ROUNDS, DEFAULT_THREADS, DEFAULT_TIMEOUT_S, StressPlan, StressSpec
from .scope import StressLedger, unstressed_reason

if TYPE_CHECKING:
    from ..config import Settings

# pytest-django fixtures that give a test real commits, visible to other connections.
TRANSACTIONAL_FIXTURES = frozenset({"transactional_db", "live_server", "django_db_reset_sequences",
                                    "django_db_serialized_rollback"})
STRESS_NEEDS_COMMITS = (
    "@pytest.mark.stress needs real commits, but this test runs inside pytest-django's wrapping "
    "transaction (the `db` fixture or @pytest.mark.django_db), which the other threads cannot "
    "see. Use @pytest.mark.django_db(transaction=True) or the `transactional_db` fixture."
)


def plan_for(item: pytest.Item, spec: StressSpec | None, settings: Settings,
             ledger: StressLedger) -> StressPlan | None:
    """How this test is stressed in this run, or None; a usage error if it cannot be."""
    if not settings.stress:
        return None
    commits = transactional(item)
    if spec is None:
        if settings.stress_scope != "all":
            return None
        reason = unstressed_reason(item, commits)
        if reason is not None:
            ledger.left[item.nodeid] = reason
            return None
        if not commits:
            return None
        spec = StressSpec(DEFAULT_THREADS, DEFAULT_ROUNDS, DEFAULT_TIMEOUT_S)
    if is_unittest(item):
        raise markers.MarkerError(
            "@pytest.mark.stress runs pytest test functions; unittest-style test methods "
            "(TestCase / TransactionTestCase) cannot be stressed yet. Write the test as a "
            "function with @pytest.mark.django_db(transaction=True).")
    if commits is False:
        raise markers.MarkerError(STRESS_NEEDS_COMMITS)
    ledger.stressed.append(item.nodeid)
    return StressPlan(
        threads=settings.stress_threads or spec.threads,
        rounds=spec.rounds,
        timeout=settings.stress_timeout or spec.timeout,
        seed=settings.stress_seed,
        lock_wait_ms=settings.rule_options["lock_wait_ms"],
        show_params=settings.show_params,
    )


def transactional(item: pytest.Item) -> bool | None:
    """True: real commits (transaction=True); False: pytest-django's wrapping transaction;
    None: the test declares no database access."""
    names = set(getattr(item, "fixturenames", ()))
    if names & TRANSACTIONAL_FIXTURES:
        return True
    marker = item.get_closest_marker("django_db")
    if marker is not None:
        transaction = marker.kwargs.get("transaction", marker.args[0] if marker.args else False)
        return bool(transaction or marker.kwargs.get("reset_sequences")
                    or marker.kwargs.get("serialized_rollback"))
    if "db" in names:
        return False
    return None


def is_unittest(item: pytest.Item) -> bool:
    import unittest

    cls = getattr(item, "cls", None)
    return cls is not None and issubclass(cls, unittest.TestCase)
