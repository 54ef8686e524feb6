"""The rule registry's types: RuleSpec, RuleOption, TestContext, RuleRegistry, @rule."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# what recording a rule can ask for, re-exported for the rules' declarations
from ..recording import (  # noqa: F401
    PROBE_BODY_UNITS,
    PROBE_CENSUS,
    PROBE_COMMITS,
    PROBE_EAGER_LOADS,
    PROBE_EXPLAIN,
    PROBE_LIFECYCLE,
    PROBE_LOAD_GROUPS,
    PROBE_LOCKS,
    PROBE_PARAM_KEYS,
    PROBE_PSYCOPG,
    PROBE_TEMPLATES,
)

if TYPE_CHECKING:
    from ..events import Finding, TestRecord

ACTIONS = ("fail", "warn", "off")
STAGES = ("call", "teardown")

# How a rule treats a test that --dbguard-stress runs in threads:
JUDGE = "judge"  # as any other test, on the whole stressed run
# each thread's run of the body in each round (a thread-round) judged on its own, as an
# unstressed body is; one finding per place, naming the worst thread-round (threadrounds.py)
THREAD_ROUNDS = "thread-rounds"
SUSPENDED = "suspended"  # off: what the rule judges means nothing for a stressed body
STRESS_ON = "on"  # on with its default action, even without --dbguard


RULE_ID_RE = re.compile(r"^[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*$")


@dataclass(frozen=True)
class RuleOption:
    """A setting a rule reads from `TestContext.options`, with its one default value."""

    name: str
    default: Any
    flag: str | None = None  # the command-line option that sets it


@dataclass(frozen=True)
class TestContext:
    """What a rule may know about a test besides its record: markers and options, resolved."""

    __test__ = False

    nodeid: str
    budget: Any = None  # markers.Budget | None
    max_queries: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


Check = Callable[["TestRecord", TestContext], Iterable["Finding"]]


@dataclass(frozen=True)
class RuleSpec:
    id: str
    default_action: str
    summary: str
    check: Check
    # marker-driven rules fire whenever their marker is on a test, even without --dbguard
    marker: str | None = None
    # "call": judged when the test body returns (the test fails); "teardown": judged once
    # fixtures are torn down (reported as an error at teardown)
    stage: str = "call"
    probes: frozenset[str] = frozenset()
    options: tuple[RuleOption, ...] = ()
    stress: str = JUDGE
    # THREAD_ROUNDS only: a finding stands only when every run of the body that ran its
    # statement shows it (slow-query: waiting for another thread's lock slows some runs, never
    # the one that took the lock first)
    stress_every_run: bool = False
    # the option that switches the rule on (with default_action) when it is given a value;
    # without it the rule has nothing to look at and stays off
    switch: str | None = None
    # judged only when the run compares with a baseline file, which then turns it on
    needs_baseline: bool = False
    # the check reads nothing but the call phase's statements: a test body that ran none cannot
    # break it, so it is not asked (most of a fast suite's rule pass otherwise)
    needs_call_queries: bool = False
    # after the rule's finding, dbguard rolls the test's connections back so that the next test
    # starts clean (one mistake, one failure)
    restores_connection: bool = False
    builtin: bool = True


class RuleError(ValueError):
    """A rule cannot be registered (bad id, clash, bad default); the run stops before tests."""


class RuleRegistry:
    """The rules of one run, in registration order (the order findings are reported in)."""

    def __init__(self) -> None:
        self.specs: dict[str, RuleSpec] = {}
        self._by_stage: dict[str, tuple[RuleSpec, ...]] = {}

    def add(self, spec: RuleSpec) -> None:
        if not isinstance(spec.id, str) or not RULE_ID_RE.match(spec.id):
            raise RuleError(
                f"invalid rule id {spec.id!r}: use lowercase letters and digits, words joined "
                f"by '-', '_' or '.' (for example 'myapp-no-raw-sql')")
        if spec.id in self.specs:
            owner = "a built-in rule" if self.specs[spec.id].builtin else "another rule"
            raise RuleError(f"rule id {spec.id!r} is already used by {owner}; pick another id")
        if spec.default_action not in ACTIONS:
            raise RuleError(f"rule {spec.id!r}: default must be one of {', '.join(ACTIONS)}, "
                            f"got {spec.default_action!r}")
        if spec.stage not in STAGES or not callable(spec.check):
            raise RuleError(f"rule {spec.id!r}: check must be callable and stage one of "
                            f"{', '.join(STAGES)}")
        for option in spec.options:
            known = self.option_defaults().get(option.name, option.default)
            if known != option.default:
                raise RuleError(f"rule {spec.id!r}: option {option.name!r} has default "
                                f"{option.default!r} but another rule declares {known!r}")
        self.specs[spec.id] = spec
        self._by_stage.clear()

    def at_stage(self, stage: str) -> tuple[RuleSpec, ...]:
        """The rules judged at `stage`, in registration order; sorted out once per run."""
        specs = self._by_stage.get(stage)
        if specs is None:
            specs = self._by_stage[stage] = tuple(s for s in self.specs.values()
                                                  if s.stage == stage)
        return specs

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self.specs

    def __getitem__(self, rule_id: str) -> RuleSpec:
        return self.specs[rule_id]

    def __iter__(self) -> Iterator[RuleSpec]:
        return iter(self.specs.values())

    def __len__(self) -> int:
        return len(self.specs)

    def ids(self) -> list[str]:
        return sorted(self.specs)

    def option_defaults(self) -> dict[str, Any]:
        """Every option a rule declares, at its default (what settings start from)."""
        return {o.name: o.default for spec in self.specs.values() for o in spec.options}

    def summaries(self) -> dict[str, str]:
        """Rule id -> one-line description: the data reports list rules from."""
        return {spec.id: spec.summary for spec in self.specs.values()}


def rule(rule_id: str, default: str, summary: str, **declared: Any) -> Callable[[Check], Check]:
    """Declare a built-in rule next to its check (collected by builtin_specs())."""

    def decorate(check: Check) -> Check:
        _BUILTIN.append(RuleSpec(rule_id, default, summary, check, **declared))
        return check

    return decorate


_BUILTIN: list[RuleSpec] = []
