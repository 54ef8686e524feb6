"""The public rule API over hand-built records: the view, findings, errors, registration."""

from __future__ import annotations

import pytest

from pytest_dbguard.events import Finding
from pytest_dbguard.rules import RuleError, RuleRegistry, TestContext, builtin_registry, evaluate
from pytest_dbguard.rules.api import Registrar, RuleTest, adapt
from tests.records import APP_SITE, NODEID, TEST_SITE, RecordBuilder

pytestmark = pytest.mark.unit

COUNT = 'SELECT COUNT(*) AS "__count" FROM "shop_author"'
BOOK = 'SELECT "id", "title" FROM "shop_book" WHERE "id" = 1'


def record():
    return (RecordBuilder()
            .query(BOOK, phase="setup", site=TEST_SITE)
            .query(COUNT, times=2, site=TEST_SITE)
            .query(BOOK, site=APP_SITE, alias="replica")
            .query("SAVEPOINT s1", phase="teardown", site=None)
            .build())


def view(rule_id="mine"):
    return RuleTest(rule_id, record(), TestContext(NODEID))


def test_the_view_lists_every_query_in_phase_order():
    test = view()
    assert test.nodeid == NODEID
    assert [(q.phase, q.fingerprint) for q in test.queries] == [
        ("setup", 'SELECT "id", "title" FROM "shop_book" WHERE "id" = %s'),
        ("call", COUNT), ("call", COUNT),
        ("call", 'SELECT "id", "title" FROM "shop_book" WHERE "id" = %s'),
        ("teardown", "SAVEPOINT <name>"),
    ]
    assert [str(q.call_site) for q in test.phase_queries("call")] == [TEST_SITE, TEST_SITE,
                                                                      APP_SITE]
    assert [q.alias for q in test.phase_queries("call")] == ["default", "default", "replica"]
    assert test.queries[-1].call_site is None


def test_a_finding_carries_its_queries_as_evidence():
    test = view()
    counts = [q for q in test.queries if "COUNT" in q.fingerprint]
    finding = test.finding("2 counts", hint="use exists()", queries=counts)
    assert (finding.rule, finding.nodeid, finding.phase, finding.message, finding.hint) == (
        "mine", NODEID, "call", "2 counts", "use exists()")
    assert finding.evidence["call_sites"] == [TEST_SITE]
    assert finding.evidence["lines"] == [f"default: {COUNT}  at {TEST_SITE}"] * 2
    assert [q["phase"] for q in finding.evidence["queries"]] == ["call", "call"]


def test_a_finding_without_queries_is_a_call_phase_finding():
    finding = view().finding("plain")
    assert finding.phase == "call"
    assert finding.evidence == {"lines": [], "call_sites": [], "queries": []}


def test_long_query_lists_are_cut_in_the_lines_but_kept_in_the_evidence():
    builder = RecordBuilder()
    for i in range(15):
        builder.query(f'SELECT "id" FROM "t{i}"')
    test = RuleTest("mine", builder.build(), TestContext(NODEID))
    finding = test.finding("many", queries=test.queries)
    assert len(finding.evidence["lines"]) == 11
    assert finding.evidence["lines"][-1] == "... and 5 more queries"
    assert len(finding.evidence["queries"]) == 15


def check_counts(test):
    for query in test.queries:
        if "COUNT" in query.fingerprint:
            yield test.finding("a count", queries=[query])


def test_adapted_check_runs_like_a_builtin_one():
    found = list(adapt("mine", check_counts)(record(), TestContext(NODEID)))
    assert [f.message for f in found] == ["a count", "a count"]


def test_a_check_returning_none_finds_nothing():
    assert list(adapt("mine", lambda test: None)(record(), TestContext(NODEID))) == []


@pytest.mark.parametrize(("check", "error"), [
    (lambda test: 1 / 0, "ZeroDivisionError: division by zero"),
    (lambda test: ["not a finding"], "TypeError: it yielded 'not a finding'; yield "
                                     "test.finding(...) instead"),
    (lambda test: [Finding("other", NODEID, "call", "x")], "TypeError: it yielded"),
])
def test_a_broken_check_becomes_its_rules_error_finding(check, error):
    [finding] = adapt("mine", check)(record(), TestContext(NODEID))
    assert finding.rule == "mine" and finding.nodeid == NODEID
    assert finding.message.startswith(f"the check of rule 'mine' raised an error: {error}")
    assert finding.hint.startswith("fix tests.unit.test_rule_api.")


def test_registration_through_the_registrar():
    registry = RuleRegistry()
    register = Registrar(registry)
    register("mine", check_counts)
    register("strict", check_counts, default="fail", description="counts fail")
    assert registry["mine"].default_action == "warn"
    assert registry["mine"].summary == "mine"
    assert registry["strict"].summary == "counts fail"
    assert not registry["mine"].builtin


def test_the_summary_defaults_to_the_checks_first_docstring_line():
    def documented(test):
        """Counts in the body.

        More text.
        """
        return ()

    registry = RuleRegistry()
    Registrar(registry)("doc", documented)
    assert registry["doc"].summary == "Counts in the body."


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("nplusone", check_counts), {}, "already used by a built-in rule"),
    (("Bad Id", check_counts), {}, "invalid rule id 'Bad Id'"),
    (("mine", check_counts), {"default": "error"}, "default must be one of fail, warn, off"),
    (("mine", "not a function"), {}, "check must be a function taking the test"),
])
def test_bad_registrations_are_refused(args, kwargs, message):
    with pytest.raises(RuleError, match=message):
        Registrar(builtin_registry())(*args, **kwargs)


def test_custom_and_builtin_rules_evaluate_together():
    registry = builtin_registry()
    Registrar(registry)("mine", check_counts)
    actions = {"mine": "warn", "slow-query": "warn"}
    found = evaluate(record(), TestContext(NODEID), actions, {"mine": "known"},
                     registry=registry)
    assert [(f.rule, f.action, f.allowed_reason) for f in found] == [
        ("mine", "warn", "known"), ("mine", "warn", "known")]
