"""`swallowed-db-error`: a database error caught inside atomic, the transaction left unusable."""

from __future__ import annotations

from collections.abc import Iterable

from ..events import Finding, TestRecord
from ..facts import CaughtDbError, ConnectionState
from ..text import plural
from .lifecycle import LIFECYCLE_PROBES, lifecycle_facts
from .registry import TestContext, rule

HINT_SWALLOWED = ("give the statement that may fail its own savepoint so that only it is rolled "
                  "back: `try: with transaction.atomic(): ...  except IntegrityError: ...`; "
                  "or let the error propagate")


@rule("swallowed-db-error", "fail", "a database error was caught inside atomic and the "
      "transaction left unusable", probes=LIFECYCLE_PROBES, restores_connection=True)
def check_swallowed_db_error(record: TestRecord, context: TestContext) -> Iterable[Finding]:
    lifecycle = lifecycle_facts(record)
    errors_seen: list[CaughtDbError] = lifecycle.get("errors", [])
    if not errors_seen:  # no query failed in the test body: nothing was swallowed
        return ()
    raised_facts = record.facts.get("raised") or {}
    raised = set(raised_facts.get("exc_ids", ()))
    caught = [e for e in errors_seen if e.caught_by == "code"]
    # an error swallowed inside its block never left it, even when a failure the test ends
    # with names it as its cause (TransactionManagementError is raised `from` it)
    findings = _swallowed_in_block([e for e in caught if e.in_block is not None], record,
                                   raised_facts.get("type"))
    swallowed = [e for e in caught if e.in_block is None and e.exc_id not in raised]
    if not swallowed:
        return findings
    ends: list[ConnectionState] = lifecycle.get("txstate", {}).get("call", [])
    for end in ends:
        if not end.open:
            continue
        reasons = []
        if end.needs_rollback and end.depth:
            reasons.append("needs_rollback")
        if end.driver == "in error":
            reasons.append("the driver reports INERROR")
        errors = [e for e in swallowed if e.alias == end.alias
                  and e.thread_ident == lifecycle.get("test_ident", e.thread_ident)]
        if not reasons or not errors:
            continue
        lines = _error_lines(errors)
        findings.append(Finding(
            rule="swallowed-db-error",
            nodeid=record.nodeid,
            phase="call",
            message=f"{plural(len(errors), 'database error was', 'database errors were')} "
                    f"caught inside atomic and the transaction on '{end.alias}' was left "
                    f"unusable ({', '.join(reasons)}); the next query in it fails",
            hint=HINT_SWALLOWED,
            evidence={"lines": lines},
        ))
    return findings


def _error_lines(errors: list[CaughtDbError]) -> list[str]:
    lines = []
    for error in errors:
        code = f" (SQLSTATE {error.sqlstate})" if error.sqlstate else ""
        lines.append(f"{error.type}{code}: {error.message}")
        lines.append(f"    from {error.sql} at {error.site or 'an unknown place'}; "
                     f"caught and not re-raised in {error.caught_in}() at "
                     f"{error.caught_at}")
    return lines


def _swallowed_in_block(errors: list[CaughtDbError], record: TestRecord,
                        failed_with: str | None) -> list[Finding]:
    """Errors caught inside the very atomic block they broke, one finding per block."""
    blocks: dict[tuple[str, str, str], list[CaughtDbError]] = {}
    for error in errors:
        block = error.in_block
        if block is None:
            continue
        blocks.setdefault((error.alias, block.block_exit, block.outcome),
                          []).append(error)
    findings = []
    for (alias, block_exit, outcome), group in blocks.items():
        failed = (f"; the test then failed with {failed_with}, which this explains"
                  if failed_with else "")
        findings.append(Finding(
            rule="swallowed-db-error",
            nodeid=record.nodeid,
            phase="call",
            message=f"{plural(len(group), 'database error was', 'database errors were')} "
                    f"caught inside the atomic block at {block_exit} (on "
                    f"'{alias}') instead of outside it: the block {outcome}{failed}",
            hint=HINT_SWALLOWED,
            evidence={"lines": _error_lines(group), "block_exit": block_exit},
        ))
    return findings
