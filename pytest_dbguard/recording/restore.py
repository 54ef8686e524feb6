"""Putting the test thread's Django connections back after a test left a transaction open.

One mistake must make one failure: a connection left with autocommit off, inside an atomic block
or inside a driver-level transaction would otherwise break the fixture teardown and the next
test in unrelated ways. Runs once the call phase is over and its state has been recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import Any

from ..events import Finding
from ..facts import ConnectionState

FACT = "restored"


def restore_connections(facts: dict[str, Any]) -> list[str]:
    """Reset each test-thread connection the test body left open; what was done, per alias."""
    txstate = (facts.get("lifecycle") or {}).get("txstate") or {}
    ends = txstate.get("call")
    if not ends:
        return []
    before = {s.alias: s for s in txstate.get("setup", ())}
    done: list[str] = []
    for end in ends:
        start = before.get(end.alias)
        if not end.open or not _left_open(start.depth if start is not None else 0, end):
            continue  # decided from the recorded states: the connection object is not needed
        from django.db import connections

        try:
            wrapper = connections[end.alias]
        except Exception:
            continue
        try:
            action = _restore(wrapper, start.depth if start is not None else 0, end)
        except Exception as exc:
            # a connection that cannot even roll back is closed: the next test reconnects
            with contextlib.suppress(Exception):
                if not wrapper.in_atomic_block:
                    wrapper.close()
            action = f"could not roll back ({type(exc).__name__}) and closed the connection"
        if action:
            done.append(f"dbguard {action} on '{end.alias}' so that the next test starts "
                        f"clean")
    return done


def _left_open(start_depth: int, end: ConnectionState) -> bool:
    """Whether the body left a transaction that _restore puts back."""
    if start_depth == 0:
        return bool(end.depth or not end.autocommit
                    or end.driver in ("in transaction", "in error"))
    return end.depth > start_depth


def _restore(wrapper: Any, start_depth: int, end: ConnectionState) -> str | None:
    if not _left_open(start_depth, end):
        return None
    if start_depth == 0:
        _drop_atomic_state(wrapper, 0)
        wrapper.needs_rollback = False
        wrapper.rollback()
        wrapper.set_autocommit(True)
        return "rolled the transaction back, turned autocommit back on and cleared the atomic state"
    # deeper than when the body began (at the same depth, the enclosing block -- pytest-django's
    # -- rolls back what it holds)
    _drop_atomic_state(wrapper, start_depth)
    # what the abandoned blocks did must not be committed by the enclosing one
    wrapper.needs_rollback = True
    return (f"closed the {end.depth - start_depth} atomic block(s) the test left open "
            f"(the enclosing transaction rolls back)")


def _drop_atomic_state(wrapper: Any, depth: int) -> None:
    blocks = getattr(wrapper, "atomic_blocks", None)
    if blocks is not None:
        del blocks[depth:]
    # the outermost block has no savepoint: depth d keeps d - 1 savepoint ids
    del wrapper.savepoint_ids[max(depth - 1, 0):]
    if depth == 0:
        wrapper.in_atomic_block = False
        wrapper.commit_on_exit = True
        wrapper.savepoint_state = 0


def mention_restore(findings: list[Finding], restored: list[str],
                    restoring_rules: Collection[str]) -> list[Finding]:
    """Findings of the rules whose damage was undone say so (the next test is not affected)."""
    if not restored:
        return findings
    out = []
    for finding in findings:
        if finding.rule in restoring_rules:
            lines = list(finding.evidence.get("lines") or ()) + restored
            finding = replace(finding, evidence={**finding.evidence, "lines": lines})
        out.append(finding)
    return out


def restore_after_call(facts: dict[str, Any], actions: Mapping[str, str],
                       restoring_rules: Collection[str]) -> None:
    """Once the call phase is recorded: restore the connections when a rule that reports the
    damage is on, and keep what was done in the facts for its finding."""
    for rule in restoring_rules:
        if actions.get(rule) not in ("off", None):
            break
    else:
        return
    facts[FACT] = restore_connections(facts)
