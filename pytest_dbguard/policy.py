"""Per-test policy: the action each rule takes on one test, settled in this one place.

Pure functions of the settings, the rule registry and what the test declares; the session asks
them, and so do the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .rules import STRESS_ON, SUSPENDED, RuleRegistry, RuleSpec

if TYPE_CHECKING:
    from .config import Settings


@dataclass(frozen=True)
class TestFacts:
    """What a test declares that changes which rules judge it."""

    __test__ = False

    markers: frozenset[str] = frozenset()  # the rule markers present on the test
    stressed: bool = False  # --dbguard-stress runs this test's body in threads


RUN_WIDE = TestFacts()


def action_for(spec: RuleSpec, settings: Settings, facts: TestFacts = RUN_WIDE) -> str:
    """fail, warn or off for one rule on one test (RUN_WIDE: a test with no markers)."""
    if facts.stressed and spec.stress == SUSPENDED:
        return "off"
    explicit = settings.actions.get(spec.id)
    if spec.needs_baseline:
        return (explicit or spec.default_action) if settings.compares_baseline else "off"
    if spec.switch is not None:
        # the option names what to check: it turns the rule on; without it there is nothing
        if not settings.rule_options.get(spec.switch):
            return "off"
        return explicit or spec.default_action
    if explicit is not None:
        return explicit
    if (settings.enabled or (spec.marker is not None and spec.marker in facts.markers)
            or (facts.stressed and spec.stress == STRESS_ON)):
        return spec.default_action
    return "off"


def test_actions(registry: RuleRegistry, settings: Settings,
                 facts: TestFacts = RUN_WIDE) -> dict[str, str]:
    return {spec.id: action_for(spec, settings, facts) for spec in registry}


class ActionTable:
    """test_actions worked out once per distinct TestFacts of the run, not once per test.

    The actions depend only on the registry, the settings (both fixed for the run) and the
    facts, and a run has a handful of distinct facts (most tests carry no rule marker), so the
    start of a test is one dict lookup and a copy instead of a pass over every rule.
    """

    def __init__(self, registry: RuleRegistry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self._known: dict[TestFacts, dict[str, str]] = {}

    def for_test(self, facts: TestFacts = RUN_WIDE) -> dict[str, str]:
        actions = self._known.get(facts)
        if actions is None:
            actions = self._known[facts] = test_actions(self.registry, self.settings, facts)
        # a copy: a test's state owns its actions
        return dict(actions)

    def shared(self, facts: TestFacts = RUN_WIDE) -> dict[str, str]:
        """for_test without the copy, for callers that only read it (the session): the same
        dict for every test with these facts, so what depends on it can be cached by identity."""
        if facts not in self._known:
            self.for_test(facts)
        return self._known[facts]


def probes_needed(registry: RuleRegistry, settings: Settings) -> frozenset[str]:
    """The recording the run's active rules read: nothing for a rule that is off."""
    needed: set[str] = set()
    for spec in registry:
        if spec.probes and action_for(spec, settings) != "off":
            needed |= spec.probes
    return frozenset(needed)


def rule_markers(registry: RuleRegistry) -> frozenset[str]:
    return frozenset(spec.marker for spec in registry if spec.marker)
