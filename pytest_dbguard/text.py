"""Wording shared by recording, rules and reports: SQL shortened for a one-line message."""

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
