"""Wording shared by recording, rules and reports: SQL and exceptions shortened to one line."""

from __future__ import annotations

import re

_SELECT_LIST_RE = re.compile(r"^SELECT\s+(DISTINCT\s+)?(.+?)\s+FROM\s", re.DOTALL)


def short_sql(fingerprint: str, width: int = 160) -> str:
    """The fingerprint for a one-line message: select list elided, long text cut."""
    match = _SELECT_LIST_RE.match(fingerprint)
    if match and "(" not in match.group(2):
        distinct = match.group(1) or ""
        fingerprint = f"SELECT {distinct}... FROM " + fingerprint[match.end():]
    if len(fingerprint) > width:
        fingerprint = fingerprint[: width - 3] + "..."
    return fingerprint


def first_line(exc: BaseException) -> str:
    """An exception's message for a one-line report: its first line, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def plural(n: int, one: str, many: str) -> str:
    """`n` with the noun that fits it: "1 connection", "2 connections"."""
    return f"{n} {one if n == 1 else many}"
