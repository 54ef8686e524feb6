"""Database aliases named by options and markers, checked against settings.DATABASES."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import pytest


def configured_aliases() -> list[str] | None:
    """settings.DATABASES' aliases, or None while Django is not configured (never imports it)."""
    if "django" not in sys.modules:
        return None
    try:
        from django.conf import settings

        if not settings.configured:
            return None
        return sorted(getattr(settings, "DATABASES", {}) or {})
    except Exception:
        return None


def unknown_alias_message(what: str, aliases: Iterable[str] | None) -> str | None:
    """The sentence for aliases that name no database (a check of nothing), or None."""
    known = configured_aliases()
    if known is None:
        return None
    unknown = [alias for alias in aliases or () if alias not in known]
    if not unknown:
        return None
    return (f"{what}: {', '.join(map(repr, unknown))} is not a configured database alias. "
            f"Configured aliases (settings.DATABASES): {', '.join(known) or 'none'}.")


def check_readonly_aliases(readonly: tuple[str, ...]) -> bool:
    """UsageError before any test runs; False when Django is not configured yet to tell."""
    if not readonly or configured_aliases() is None:
        return not readonly
    message = unknown_alias_message("--dbguard-readonly-alias", readonly)
    if message:
        raise pytest.UsageError(f"dbguard: {message} Fix the option's value.")
    return True


def check_marker_aliases(budget: Any, timeout: Any) -> None:
    """A marker's `using=` naming no database would silently check nothing: fail the test."""
    from .markers import MarkerError

    for what, parsed in (("@pytest.mark.query_budget", budget),
                         ("@pytest.mark.query_timeout", timeout)):
        message = unknown_alias_message(f"invalid {what}", parsed.using if parsed else None)
        if message:
            raise MarkerError(message)


def check_readonly_in_test(readonly: Iterable[str] | None) -> None:
    """The same check as check_readonly_aliases, for runs where Django was configured after
    pytest_configure: it fails the first recorded test instead."""
    from .markers import MarkerError

    message = unknown_alias_message("--dbguard-readonly-alias", readonly)
    if message:
        raise MarkerError(f"{message} Fix the option's value.")
