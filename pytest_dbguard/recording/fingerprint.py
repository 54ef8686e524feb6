"""SQL fingerprints: one normalised text and a stable id per query shape, via sqlparse's lexer."""

from __future__ import annotations

import hashlib
import re

from sqlparse import lexer
from sqlparse import tokens as T

from ..events import Catalog, SqlShape
from ..text import short_sql  # noqa: F401  (re-exported: recording and stress use it)

# A cheap pre-normalisation: queries that differ only in inline literals share the (slow) lexer
# pass. It never decides the fingerprint by itself; sqlparse does.
_LITERAL_RE = re.compile(r"'(?:[^']|'')*'|(?<![\w\"$])\d+(?:\.\d+)?(?![\w\"])")

# ...and so do IN lists and VALUES groups made only of placeholders, whatever their length:
# `IN (%s, %s)` and `IN (%s, %s, %s)` are one shape (the normaliser collapses such lists too).
# Without this every length of a prefetch's or bulk_create's list took the lexer's ~1 ms once.
# Only after IN or VALUES: `COALESCE(%s)` and `COALESCE(%s, %s)` are not one shape.
_PARAMS = r"\(\s*(?:%s|\?)(?:\s*,\s*(?:%s|\?))*\s*\)"
_PARAM_LIST_RE = re.compile(rf"\b(IN|VALUES)\s*{_PARAMS}(?:\s*,\s*{_PARAMS})*", re.IGNORECASE)

_TX_CONTROL_RE = re.compile(
    r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE(\s+SAVEPOINT)?)\b",
    re.IGNORECASE,
)
_WRITE_RE = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|MERGE|CREATE|ALTER|DROP|TRUNCATE|GRANT|REVOKE|COPY|VACUUM)\b"
    r"|\bFOR\s+(NO\s+KEY\s+)?UPDATE\b|\bFOR\s+(KEY\s+)?SHARE\b",
    re.IGNORECASE,
)

_PLACEHOLDER = "%s"


def _collapse_lists(tokens: list[str]) -> list[str]:
    """Turn `( %s , %s , ... )` and repeated `( ... ) , ( ... )` VALUES groups into one form."""
    out: list[str] = []
    i = 0
    n = len(tokens)
    while i < n:
        tok = tokens[i]
        if tok == "(":
            # a parenthesised list made only of placeholders and commas
            j = i + 1
            only_params = j < n and tokens[j] == _PLACEHOLDER
            while j < n and tokens[j] in (_PLACEHOLDER, ","):
                j += 1
            if only_params and j < n and tokens[j] == ")":
                out.extend(("(", "...", ")"))
                i = j + 1
                # a VALUES list repeats the group: keep one
                while i + 4 < n + 1 and tokens[i:i + 2] == [",", "("]:
                    k = i + 2
                    while k < n and tokens[k] in (_PLACEHOLDER, ","):
                        k += 1
                    if k < n and tokens[k] == ")" and k > i + 2:
                        i = k + 1
                    else:
                        break
                continue
        out.append(tok)
        i += 1
    return out


def _normalise(sql: str) -> str:
    words: list[str] = []
    prev_is_name = False
    for ttype, value in lexer.tokenize(sql):
        if ttype in T.Whitespace or ttype in T.Newline or ttype in T.Comment:
            continue
        if (ttype in T.Literal.Number or ttype in T.Literal.String.Single
                or ttype in T.Name.Placeholder):
            words.append(_PLACEHOLDER)
            prev_is_name = False
        elif ttype in T.Keyword:
            words.append(value.upper())
        elif value == "(" and words and prev_is_name:
            # a function call: COUNT(*), not COUNT (*)
            words[-1] += "("
            prev_is_name = False
            continue
        else:
            words.append(value)
        prev_is_name = ttype in T.Name and ttype not in T.Name.Placeholder
    words = _collapse_lists(words)
    text = " ".join(words)
    # tidy spacing around punctuation so the text reads like SQL
    text = text.replace(" . ", ".").replace(" ,", ",").replace("( ", "(").replace(" )", ")")
    return text.rstrip(" ;")


class Fingerprinter:
    """Maps SQL text to an index into `catalog.shapes`; caches are bounded, shapes deduplicated."""

    def __init__(self, catalog: Catalog, max_entries: int = 20_000) -> None:
        self.catalog = catalog
        self.by_sql: dict[str, int] = {}
        self._by_prekey: dict[str, int] = {}
        self._by_id: dict[str, int] = {}
        self._max = max_entries

    def index_of(self, sql: str) -> int:
        found = self.by_sql.get(sql)
        if found is not None:
            return found
        savepoint = _SAVEPOINT_STATEMENT_RE.match(sql)
        if savepoint is not None:
            # Django names every savepoint differently (s140234_x12), so each is a new text:
            # one shape per statement, and the text is not kept (it never comes back, and
            # by_sql would fill with them)
            found = self._by_prekey.get(savepoint.group(1).upper())
            if found is not None:
                return found
            prekey = savepoint.group(1).upper()
        else:
            prekey = _PARAM_LIST_RE.sub(r"\1 (...)", _LITERAL_RE.sub("?", sql))
        found = self._by_prekey.get(prekey)
        shape = make_shape(sql) if found is None else None
        with self.catalog.lock:
            if shape is not None:
                found = self._by_id.get(shape.fingerprint_id)
                if found is None:
                    found = self.catalog.add(self.catalog.shapes, shape)
                    self._by_id[shape.fingerprint_id] = found
                if len(self._by_prekey) >= self._max:
                    self._by_prekey.clear()
                self._by_prekey[prekey] = found
            assert found is not None
            if len(self.by_sql) >= self._max:
                self.by_sql.clear()
            self.by_sql[sql] = found
        return found


# SAVEPOINT "name", RELEASE SAVEPOINT "name", ROLLBACK TO SAVEPOINT "name" (as Django sends them)
_SAVEPOINT_STATEMENT_RE = re.compile(
    r'\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+TO\s+SAVEPOINT)\s+(?:"[^"]*"|\w+)\s*;?\s*$',
    re.IGNORECASE)
_SAVEPOINT_NAME_RE = re.compile(r'(SAVEPOINT)\s+("[^"]*"|\w+)', re.IGNORECASE)


def make_shape(sql: str) -> SqlShape:
    is_tx = bool(_TX_CONTROL_RE.match(sql))
    text = _normalise(sql)
    if is_tx:
        # Django names every savepoint differently; the shape is the statement, not the name
        text = _SAVEPOINT_NAME_RE.sub(r"\1 <name>", text)
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]
    verb_match = re.match(r"\s*(\w+)", sql)
    verb = verb_match.group(1).upper() if verb_match else ""
    return SqlShape(
        fingerprint=text,
        fingerprint_id=digest,
        is_transaction_control=is_tx,
        is_write=bool(_WRITE_RE.search(sql)),
        verb=verb,
    )
