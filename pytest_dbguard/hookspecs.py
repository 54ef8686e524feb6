"""The hooks pytest-dbguard offers: how a project or a plugin adds its own rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .rules.api import Registrar


@pytest.hookspec
def pytest_dbguard_register_rules(register: Registrar) -> None:
    """Register database rules; called once per run, from ``conftest.py`` or a plugin.

    ``register(rule_id, check, *, default="warn", description="")`` adds one rule. ``check``
    receives a read-only view of each recorded test (``.nodeid``, ``.queries``) and yields
    findings made with ``test.finding(headline, hint=..., queries=...)``. A rule registered here
    is configured like a built-in one: ``--dbguard-rule ID=ACTION``, the ``dbguard_rules`` ini
    key, ``@pytest.mark.dbguard_allow`` and every report.
    """
