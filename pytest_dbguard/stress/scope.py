"""Which tests a stress run stressed, and why each database test it could not stress was left."""

from __future__ import annotations

import sys
from typing import Any

import pytest

UNITTEST_REASON = (
    "a unittest-style Django TestCase / TransactionTestCase method: stress mode runs the body of "
    "pytest test functions in threads, while these classes set up and tear down their database "
    "around each method on one thread; write it as a function with "
    "@pytest.mark.django_db(transaction=True) to stress it")
WRAPPED_REASON = (
    "it runs inside pytest-django's wrapping transaction (`db` fixture or @pytest.mark.django_db "
    "without transaction=True), which other threads cannot see; use "
    "@pytest.mark.django_db(transaction=True) to stress it")
SHOWN = 10


def is_django_test_case(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    if cls is None or "django.test" not in sys.modules:
        return False
    from django.test import TransactionTestCase  # TestCase derives from it

    return isinstance(cls, type) and issubclass(cls, TransactionTestCase)


def unstressed_reason(item: pytest.Item, transactional: bool | None) -> str | None:
    """Why --dbguard-stress-scope=all leaves this database test alone; None: stress it (or it
    uses no database, which needs no reason)."""
    if is_django_test_case(item):
        return UNITTEST_REASON
    if transactional is False:
        return WRAPPED_REASON
    return None


class StressLedger:
    """The stressed tests and the reasons for the others, merged across xdist workers."""

    def __init__(self) -> None:
        self.stressed: list[str] = []
        self.left: dict[str, str] = {}

    def payload(self) -> dict[str, Any]:
        return {"stressed": list(self.stressed), "left": dict(self.left)}

    def merge(self, payload: dict[str, Any] | None) -> None:
        if not payload:
            return
        self.stressed.extend(n for n in payload.get("stressed", ()) if n not in self.stressed)
        self.left.update(payload.get("left", {}))

    def lines(self, scope: str) -> list[str]:
        stressed = sorted(set(self.stressed))
        if not stressed:
            why = ("no selected test has @pytest.mark.stress" if scope == "marked" else
                   "no selected test uses a transactional database "
                   "(transactional_db or @pytest.mark.django_db(transaction=True))")
            out = [f"stress mode stressed no test: {why}."]
        else:
            out = [f"stress mode stressed {len(stressed)} test(s): {_some(stressed)}."]
        if self.left:
            out.append(f"stress mode could not stress {len(self.left)} database test(s):")
            for nodeid in sorted(self.left)[:SHOWN]:
                out.append(f"  {nodeid}: {self.left[nodeid]}")
            if len(self.left) > SHOWN:
                out.append(f"  and {len(self.left) - SHOWN} more")
        return out


def _some(nodeids: list[str]) -> str:
    shown = ", ".join(nodeids[:SHOWN])
    return shown + (f" and {len(nodeids) - SHOWN} more" if len(nodeids) > SHOWN else "")
