"""dbguard's markers: registration, and one signature function per marker that validates it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # the parsed forms are imported when a marker is first parsed
    from .rules.budget import Budget
    from .rules.shape import QueryTimeout
    from .stress import StressSpec

MARKERS = {
    "query_budget": "query_budget(n, *, using=None, count_tx=False): fail the test if its call "
                    "phase runs more than n queries (all aliases, or only `using`).",
    "query_timeout": "query_timeout(ms, *, using=None): cancel any query of this test that runs "
                     "longer than ms milliseconds and fail the test (PostgreSQL statement and "
                     "lock timeout, SQLite progress handler).",
    "dbguard_allow": "dbguard_allow(*rule_ids, reason=...): silence these dbguard rules for "
                     "this test; the findings stay in the JSON report.",
    "stress": "stress(threads=4, rounds=3, timeout=10.0): with --dbguard-stress, run the test "
              "body in `threads` threads released together, `rounds` times, each round within "
              "`timeout` seconds (needs django_db(transaction=True)).",
}


# Markers that make a test recorded even when the run did not turn dbguard on.
RECORDING_MARKERS = ("query_budget", "query_timeout", "stress")


class MarkerError(Exception):
    """A marker was used with arguments that do not fit its signature."""


def register(config: pytest.Config) -> None:
    for text in MARKERS.values():
        config.addinivalue_line("markers", text)


def _aliases(value: Any, marker: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise MarkerError(f"using must be an alias name or a list of alias names, got {value!r}")


def query_budget(n: int, *, using: str | list[str] | None = None,
                 count_tx: bool = False) -> Budget:
    if isinstance(n, bool) or not isinstance(n, int):
        raise MarkerError(f"n must be a whole number of queries, got {n!r}")
    if n < 0:
        raise MarkerError(f"n must be 0 or more, got {n}")
    if not isinstance(count_tx, bool):
        raise MarkerError(f"count_tx must be True or False, got {count_tx!r}")
    from .rules.budget import Budget

    return Budget(limit=n, using=_aliases(using, "query_budget"), count_tx=count_tx)


def query_timeout(ms: int, *, using: str | list[str] | None = None) -> QueryTimeout:
    if isinstance(ms, bool) or not isinstance(ms, int):
        raise MarkerError(f"ms must be a whole number of milliseconds, got {ms!r}")
    if ms <= 0:
        raise MarkerError(f"ms must be more than 0, got {ms}")
    from .rules.shape import QueryTimeout

    return QueryTimeout(ms=ms, using=_aliases(using, "query_timeout"))


def dbguard_allow(*rule_ids: str, reason: str) -> dict[str, str]:
    if not rule_ids:
        raise MarkerError("name at least one rule id to allow")
    if not isinstance(reason, str) or not reason.strip():
        raise MarkerError("reason must be a non-empty string saying why the rule is silenced")
    return {rule_id: reason for rule_id in rule_ids}


def stress(threads: int = 4, rounds: int = 3, timeout: float = 10.0) -> StressSpec:
    for name, value in (("threads", threads), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise MarkerError(f"{name} must be a whole number, got {value!r}")
        if value < 1:
            raise MarkerError(f"{name} must be 1 or more, got {value}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise MarkerError(f"timeout must be a number of seconds, got {timeout!r}")
    if not timeout > 0:
        raise MarkerError(f"timeout must be more than 0 seconds, got {timeout}")
    from .stress import StressSpec

    return StressSpec(threads=threads, rounds=rounds, timeout=float(timeout))


SIGNATURES: dict[str, Callable[..., Any]] = {
    "query_budget": query_budget,
    "query_timeout": query_timeout,
    "dbguard_allow": dbguard_allow,
    "stress": stress,
}


def parse(marker: pytest.Mark) -> Any:
    """Call the marker's signature function with the marker's arguments; explain any mismatch."""
    signature = SIGNATURES[marker.name]
    try:
        return signature(*marker.args, **marker.kwargs)
    except (TypeError, MarkerError) as exc:
        usage = MARKERS[marker.name].split(":")[0]
        raise MarkerError(
            f"invalid @pytest.mark.{marker.name}: {exc}. Expected @pytest.mark.{usage}."
        ) from None


def closest(item: pytest.Item, name: str) -> Any:
    marker = item.get_closest_marker(name)
    return parse(marker) if marker is not None else None


def allowed_rules(item: pytest.Item, rule_ids: Collection[str]) -> dict[str, str]:
    """Rules silenced by every dbguard_allow on the test, its class and its module.

    `rule_ids` are the run's rules (built-in and registered): an id not among them is an error.
    """
    allowed: dict[str, str] = {}
    for marker in item.iter_markers("dbguard_allow"):
        silenced = parse(marker)
        unknown = [r for r in silenced if r not in rule_ids]
        if unknown:
            raise MarkerError(
                f"invalid @pytest.mark.dbguard_allow: unknown rule id "
                f"{', '.join(map(repr, unknown))}; valid ids: {', '.join(sorted(rule_ids))}.")
        for rule_id, reason in silenced.items():
            allowed.setdefault(rule_id, reason)
    return allowed
